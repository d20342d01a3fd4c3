'use strict';
/*
 * examples/login/test/login.test.js: drives the login page in headless
 * Chromium (playwright-core, the system's /usr/bin/chromium).  Run by
 * test.sh, which starts the cluster and the server and sets
 *   BASE_URL     the server, http://127.0.0.1:PORT
 *   SCREENSHOT   where to write the screenshot of the verified state
 *   PG*          the cluster, for checks on what the database holds
 * Prints one "ok N - ..." / "not ok N - ..." line per check and, last,
 * "N passed, M failed"; exits 1 when a check failed.
 */
const crypto = require('node:crypto');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Client } = require('pg');
const { check, expect, run, launch, newContext } = require('./tap');

const BASE = process.env.BASE_URL;
const SHOT = process.env.SCREENSHOT || path.join(os.tmpdir(), 'screenshot.png');
const SHOT_DIR = process.env.SCREENSHOT_DIR || null;	/* extra screenshots, for humans */
const INSTANCE_DIGITS = '15550100001';
const USER_PHONE = '+1 555 010 0199';
const USER_DIGITS = '15550100199';
const OVERALL_MS = 100000;

async function main() {
	expect(BASE && BASE.startsWith('http://127.0.0.1:'), 'BASE_URL must be http://127.0.0.1:PORT');
	const db = new Client({ statement_timeout: 5000, connectionTimeoutMillis: 5000 });
	await db.connect();
	const q = async (sql, args) => (await db.query(sql, args)).rows;

	const browser = await launch();
	const outside = [];	/* requests that tried to leave 127.0.0.1 */
	const newBrowserContext = () => newContext(browser, new Set(['127.0.0.1']), outside, { viewport: { width: 1100, height: 860 } });

	try {
		const [ctx, page] = await newBrowserContext();
		let waLink = null;
		let uuid = null;
		let loginUrl = null;
		let loginKey = null;

		await check('the home page offers "Log in with WhatsApp"', async () => {
			const r = await page.goto(`${BASE}/`);
			expect(r.status() === 200, `HTTP ${r.status()}`);
			expect((await page.locator('#start').innerText()).trim() === 'Log in with WhatsApp', 'no login button');
			expect(await page.locator('#phone').isVisible(), 'no simulated phone panel');
		});

		await check('the button gets a wa.me link to the instance with the prompt and a [CODE]', async () => {
			await page.click('#start');
			await page.locator('#step-link').waitFor({ state: 'visible' });
			waLink = await page.locator('#wa-link').getAttribute('href');
			const re = new RegExp(`^https://wa\\.me/${INSTANCE_DIGITS}\\?text=Log\\+me\\+in\\+to\\+otp_link\\+demo\\+%5B[A-Z]{8}%5D\\+-\\+DO\\+NOT\\+CHANGE\\+THIS\\+MESSAGE$`);
			expect(re.test(waLink), `unexpected link ${waLink}`);
			expect(/Waiting for your WhatsApp message/.test(await page.locator('#status').innerText()), 'status is not "waiting"');
		});

		await check('the binding is a 32-byte __Host- cookie of this login (Secure, HttpOnly, Path=/), invisible to scripts, stored only as its SHA-256', async () => {
			const cookies = (await ctx.cookies(`${BASE}/login/complete`)).filter((c) => c.name.startsWith('__Host-otp_login_'));
			expect(cookies.length === 1, `cookies: ${cookies.map((c) => c.name).join(', ')}`);
			const [c] = cookies;
			expect(c.httpOnly && c.secure && c.sameSite === 'Lax' && c.path === '/' && c.domain === '127.0.0.1', `cookie flags ${JSON.stringify(c)}`);
			loginKey = c.name.slice('__Host-otp_login_'.length);
			const [pending, binding] = c.value.split('.');
			expect(/^[A-Za-z0-9_-]{43}$/.test(binding) && Buffer.from(binding, 'base64url').length === 32, 'not 32 random bytes');
			expect(!(await page.evaluate(() => document.cookie)).includes('otp_login'), 'script can read the binding');
			uuid = pending;
			const rows = await q(`SELECT binding_hash = sha256(convert_to($2, 'UTF8')) AS same, status
				FROM otp_link.links WHERE id = $1`, [uuid, binding]);
			expect(rows.length === 1 && rows[0].same === true, 'binding_hash is not the digest of the cookie');
			expect(rows[0].status === 'pending', `status ${rows[0].status}`);
		});

		await check('the QR code decodes (zbarimg) to exactly the wa.me link', async () => {
			const png = path.join(os.tmpdir(), 'qr.png');
			await page.locator('#qr').screenshot({ path: png });
			const text = execFileSync('zbarimg', ['--raw', '-q', png], { timeout: 10000, stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
			expect(text === waLink, `QR holds ${JSON.stringify(text)}`);
		});

		await check('the simulated phone sends the pre-filled draft; the inbox trigger verifies the link', async () => {
			const draft = await page.locator('#draft').inputValue();
			expect(draft === new URL(waLink).searchParams.get('text'), `draft ${JSON.stringify(draft)}`);
			await page.fill('#phone-from', USER_PHONE);
			await page.click('#send');
			await page.locator('.bubble.out[data-outcome]').waitFor();
			const outcome = await page.locator('.bubble.out').getAttribute('data-outcome');
			expect(outcome === 'verified', `outcome ${outcome}`);
			const inbox = await q('SELECT chat_id, body FROM inbox');
			expect(inbox.length === 1 && inbox[0].chat_id === `${USER_DIGITS}@c.us` && inbox[0].body === draft, 'inbox row');
			const link = await q('SELECT status, chat_id FROM otp_link.links WHERE id = $1', [uuid]);
			expect(link[0].status === 'verified' && link[0].chat_id === `${USER_DIGITS}@c.us`, JSON.stringify(link[0]));
		});

		await check('the page sees "verified" by polling otp_link_status', async () => {
			await page.locator('#status.ok').waitFor();
			expect(/Number .* verified/.test(await page.locator('#status').innerText()), 'no verified message');
		});

		await check('the waiting page shows which number verified, masked (+15••••••199), never in full', async () => {
			const text = await page.locator('#status').innerText();
			expect(text.includes(`Number +${USER_DIGITS.slice(0, 2)}${'•'.repeat(USER_DIGITS.length - 5)}${USER_DIGITS.slice(-3)} verified`), `status says ${JSON.stringify(text)}`);
			expect(/Not your number\?/.test(text), 'no advice for a number that is not theirs');
			expect(!(await page.content()).includes(USER_DIGITS), 'the number appears unmasked');
			const r = await page.evaluate(async (k) => (await fetch(`/login/status?login=${k}`)).json(), loginKey);
			expect(r.status === 'verified', `status JSON ${JSON.stringify(r)}`);
			expect(!JSON.stringify(r).includes(USER_DIGITS.slice(2, -3)), `status JSON ${JSON.stringify(r)}`);
		});

		await check('the held WhatsApp reply carries the one-time {link}; the demo provider delivers it', async () => {
			await page.locator('#continue').waitFor();
			loginUrl = await page.locator('#continue').getAttribute('href');
			const re = new RegExp(`^${BASE.replace(/[.]/g, '\\.')}/login/complete\\?login=${loginKey}&token=[A-Za-z0-9_-]{32,}$`);
			expect(re.test(loginUrl), `login link ${loginUrl}`);
			const rows = await q(`SELECT status, payload->>'body' AS body FROM otp_link.deliveries
				WHERE kind = 'reply' AND link_id = $1`, [uuid]);
			expect(rows.length === 1 && rows[0].status === 'delivered', `reply rows ${JSON.stringify(rows)}`);
			expect(rows[0].body.startsWith(`Here is your login link: ${loginUrl}\n`), `reply body ${rows[0].body}`);
			expect(/Do not share or forward this link/.test(rows[0].body), `the reply does not warn against sharing the link: ${rows[0].body}`);
			await page.screenshot({ path: SHOT });
		});

		const [ctx2, page2] = await newBrowserContext();
		await check('another browser (with a login of its own) opening the link gets binding_mismatch; the link stays usable', async () => {
			await page2.goto(`${BASE}/`);
			await page2.click('#start');
			await page2.locator('#step-link').waitFor({ state: 'visible' });
			const r = await page2.goto(loginUrl);
			expect(r.status() === 403, `HTTP ${r.status()}`);
			expect((await page2.locator('#result').innerText()) === 'binding_mismatch', 'result is not binding_mismatch');
			expect(/Wrong browser/.test(await page2.locator('h1').innerText()), 'no "Wrong browser" title');
			expect(/Do not share or forward this link/.test(await page2.locator('#problem').innerText()), 'the page does not warn against sharing the link');
			const rows = await q('SELECT redeemed_at FROM otp_link.links WHERE id = $1', [uuid]);
			expect(rows[0].redeemed_at === null, 'the mismatch used the token up');
			if (SHOT_DIR)
				await page2.screenshot({ path: path.join(SHOT_DIR, 'wrong-browser.png') });
		});

		await check('Continue in the browser that started redeems the link and shows who logged in', async () => {
			await Promise.all([page.waitForURL(`${BASE}/`), page.click('#continue')]);
			await page.locator('#welcome').waitFor();
			const phone = await page.locator('#who-phone').innerText();
			const chat = await page.locator('#who-chat').innerText();
			expect(phone === `+${USER_DIGITS}` && chat === `${USER_DIGITS}@c.us`, `shows ${phone} / ${chat}`);
			const cookies = await ctx.cookies(`${BASE}/login/complete`);
			expect(!cookies.some((c) => c.name === `__Host-otp_login_${loginKey}`), 'the binding cookie was not cleared');
			expect(cookies.some((c) => c.name === '__Host-sid' && c.httpOnly && c.secure), 'no HttpOnly, Secure session cookie');
			const rows = await q('SELECT redeemed_at FROM otp_link.links WHERE id = $1', [uuid]);
			expect(rows[0].redeemed_at !== null, 'not redeemed in the database');
			if (SHOT_DIR)
				await page.screenshot({ path: path.join(SHOT_DIR, 'logged-in.png') });
		});

		await check('the same link a second time: "already used" (already_redeemed), in either browser', async () => {
			for (const p of [page, page2]) {
				const r = await p.goto(loginUrl);
				expect(r.status() === 410, `HTTP ${r.status()}`);
				expect((await p.locator('#result').innerText()) === 'already_redeemed', 'result is not already_redeemed');
			}
			if (SHOT_DIR)
				await page.screenshot({ path: path.join(SHOT_DIR, 'already-used.png') });
			const r = await page.goto(`${BASE}/`);
			expect(r.status() === 200 && await page.locator('#welcome').isVisible(), 'the session was lost');
		});

		await check('a made-up token is refused (invalid_token)', async () => {
			const r = await page2.goto(`${BASE}/login/complete?token=${crypto.randomBytes(32).toString('base64url')}`);
			expect(r.status() === 404, `HTTP ${r.status()}`);
			expect((await page2.locator('#result').innerText()) === 'invalid_token', 'result is not invalid_token');
		});

		await check('log out ends the session', async () => {
			await page.goto(`${BASE}/`);
			await Promise.all([page.waitForURL(`${BASE}/`), page.click('#logout')]);
			await page.locator('#start').waitFor();
			expect(!(await ctx.cookies(BASE)).some((c) => c.name === '__Host-sid'), 'session cookie still there');
		});

		await check('two tabs of one browser: a login started in tab 2 does not break tab 1\'s (tab 1 sees its verification, its link logs in)', async () => {
			await page.goto(`${BASE}/`);
			await page.click('#start');
			await page.locator('#step-link').waitFor({ state: 'visible' });
			const tab2 = await ctx.newPage();
			await tab2.goto(`${BASE}/`);
			await tab2.click('#start');
			await tab2.locator('#step-link').waitFor({ state: 'visible' });
			/* the user sends tab 1's message (its QR code is still on screen) */
			await page.fill('#phone-from', USER_PHONE);
			await page.click('#send');
			await page.locator('#status.ok').waitFor();
			await page.locator('#continue').waitFor();
			const r = await Promise.all([page.waitForURL(`${BASE}/`), page.click('#continue')]).then(() => null, (e) => e);
			const result = await page.locator('#result').count() ? await page.locator('#result').innerText() : null;
			expect(!r && result === null, `tab 1's link: ${result || r}`);
			await page.locator('#welcome').waitFor();
			const key = (await ctx.cookies(BASE)).map((c) => c.name).find((n) => n.startsWith('__Host-otp_login_'));
			expect(key, 'tab 2\'s login cookie is gone');
			const j = await tab2.evaluate(async (k) => (await fetch(`/login/status?login=${k}`)).json(), key.slice('__Host-otp_login_'.length));
			expect(j.status === 'pending', `tab 2's login: ${JSON.stringify(j)}`);
			await tab2.close();
		});

		await check('no request left 127.0.0.1', async () => {
			expect(outside.length === 0, `requests to ${outside.join(', ')}`);
		});

		await ctx2.close();
		await ctx.close();
	} finally {
		await browser.close();
		await db.end();
	}
}

run(main, OVERALL_MS);
