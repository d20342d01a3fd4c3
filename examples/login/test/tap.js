'use strict';
/*
 * examples/login/test/tap.js: the little test harness shared by
 * login.test.js and attacks.test.js.  check(name, fn) runs one check and
 * prints "ok N - name" or "not ok N - name" (fn throws, or returns a
 * string, on failure); done() prints "N passed, M failed" and sets the exit
 * status; a watchdog ends the run after overallMs.
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

module.exports = { report, check, expect, run };
