'use strict';
/*
 * examples/login/test/tap.js: the little test harness shared by
 * login.test.js and attacks.test.js.  check(name, fn) runs one check and
 * prints "ok N - name" or "not ok N - name" (fn throws, or returns a
 * string, on failure); done() prints "N passed, M failed" and sets the exit
 * status; a watchdog ends the run after overallMs.  launch() starts the
 * system's Chromium (playwright-core); newContext() opens a page whose
 * requests to hosts other than the allowed ones are aborted and counted.
 */
let passed = 0;
let failed = 0;
let n = 0;

function report(ok, name, detail) {
	n++;
	if (ok)
		passed++;
	else
		failed++;
	console.log(`${ok ? 'ok' : 'not ok'} ${n} - ${name}${!ok && detail ? `\n#   ${String(detail).split('\n').join('\n#   ')}` : ''}`);
}

/* one check: fn throws (or returns a string) on failure */
async function check(name, fn) {
	try {
		const r = await fn();
		report(r === undefined || r === true, name, typeof r === 'string' ? r : 'returned false');
	} catch (err) {
		report(false, name, err && err.stack ? err.stack.split('\n').slice(0, 3).join('\n') : err);
	}
}

function expect(cond, what) {
	if (!cond)
		throw new Error(what);
}

/* runs main() with a watchdog; prints the summary line last */
function run(main, overallMs, cleanup = () => {}) {
	const watchdog = setTimeout(() => {
		report(false, `the test finished within ${overallMs / 1000} s`);
		cleanup();
		console.log(`${passed} passed, ${failed} failed`);
		process.exit(1);	/* playwright kills its browser on exit */
	}, overallMs);
	main().catch((err) => {
		report(false, 'the test ran to its end', err && err.stack ? err.stack : err);
	}).finally(() => {
		clearTimeout(watchdog);
		console.log(`${passed} passed, ${failed} failed`);
		process.exitCode = failed ? 1 : 0;
	});
}

/* headless /usr/bin/chromium (or $CHROMIUM), with extra command-line args */
function launch(args = []) {
	const { chromium } = require('playwright-core');
	return chromium.launch({
		executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
		headless: true,
		timeout: 30000,
		args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
			'--disable-background-networking', '--disable-component-update', '--disable-sync', ...args],
	});
}

/*
 * A new context and page of browser: requests to a host not in allowed (a
 * Set of host names) are aborted and their URLs pushed to outside.
 */
async function newContext(browser, allowed, outside, options = {}) {
	const ctx = await browser.newContext({ locale: 'en-US', timezoneId: 'UTC', ...options });
	await ctx.route('**/*', (route) => {
		const u = new URL(route.request().url());
		if (allowed.has(u.hostname) || u.protocol === 'data:')
			return route.continue();
		outside.push(u.href);
		return route.abort();
	});
	const page = await ctx.newPage();
	page.setDefaultTimeout(10000);
	page.setDefaultNavigationTimeout(10000);
	return [ctx, page];
}

module.exports = { report, check, expect, run, launch, newContext };
