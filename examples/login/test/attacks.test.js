'use strict';
/*
 * examples/login/test/attacks.test.js: the login example tested as an
 * attacker would (issue #18).  Run by test.sh after login.test.js, with
 *   SERVER_JS   the server to test (test.sh: ../server.js)
 *   PG*         the cluster (schema.sql loaded)
 * It starts servers of its own on free ports of 127.0.0.1, each with the
 * configuration a check needs, and stops them:
 *   victim      OTP_LINK_DEV=1, PUBLIC_URL=http://login.app.localhost:PORT
 *               (Chromium maps *.localhost to 127.0.0.1 and treats it as
 *               potentially trustworthy, like 127.0.0.1)
 *   prod        PUBLIC_URL=HTTPS://login.example.test (a proxy terminates
 *               TLS in front of it), TRUST_PROXY=1
 * and an attacker's page at http://evil.app.localhost:PORT, a sibling host
 * of the victim's, which tosses cookies for Domain=app.localhost.
 * Prints "ok N - ..." / "not ok N - ..." and, last, "N passed, M failed".
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { Client } = require('pg');
const { check, expect, run, launch, newContext } = require('./tap');

const SERVER_JS = path.resolve(process.env.SERVER_JS || path.join(__dirname, '..', 'server.js'));
const README = path.join(__dirname, '..', 'README.md');
const OVERALL_MS = 110000;
const ATTACKER_PHONE = '+1 555 010 0666';
const ATTACKER_DIGITS = '15550100666';
const PROD_URL = 'HTTPS://login.example.test';	/* upper case on purpose: the scheme is case-insensitive */
const PROD_ORIGIN = 'https://login.example.test';
const ALLOWED_HOSTS = new Set(['127.0.0.1', 'login.app.localhost', 'evil.app.localhost']);

const started = [];	/* every server process this test started */

function freePort() {
	return new Promise((resolve, reject) => {
		const s = net.createServer().listen(0, '127.0.0.1', () => {
			const { port } = s.address();
			s.close(() => resolve(port));
		});
		s.on('error', reject);
	});
}

/* one HTTP request to 127.0.0.1:port, headers exactly as given */
function request(port, method, pathname, { headers = {}, body } = {}) {
	return new Promise((resolve, reject) => {
		const req = http.request({ host: '127.0.0.1', port, method, path: pathname, headers, timeout: 8000 }, (res) => {
			const chunks = [];
			res.on('data', (c) => chunks.push(c));
			res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
		});
		req.on('timeout', () => req.destroy(new Error(`${method} ${pathname}: timeout`)));
		req.on('error', reject);
		if (body !== undefined)
			req.end(typeof body === 'string' ? body : JSON.stringify(body));
		else
			req.end();
	});
}

/* name -> value of the cookies a response sets (either name form) */
function setCookies(res) {
	const out = {};
	for (const c of res.headers['set-cookie'] || []) {
		const [nv] = c.split(';');
		const i = nv.indexOf('=');
		out[nv.slice(0, i)] = decodeURIComponent(nv.slice(i + 1));
	}
	return out;
}

/* the Host header a dev server (OTP_LINK_DEV=1) insists on: its PUBLIC_URL's */
function hostOf(env) {
	return env.OTP_LINK_DEV === '1' && env.PUBLIC_URL ? { Host: new URL(env.PUBLIC_URL).host } : {};
}

/* the login cookie a response sets: { key, uuid, binding, cookie: "name=value" } */
function loginCookie(res) {
	const jar = setCookies(res);
	const name = Object.keys(jar).find((n) => n.startsWith('__Host-otp_login_') && jar[n]);
	if (!name)
		return null;
	const [uuid, binding] = jar[name].split('.');
	return { key: name.slice('__Host-otp_login_'.length), uuid, binding, cookie: `${name}=${jar[name]}` };
}

/* one raw request (bytes exactly as given) to 127.0.0.1:port: { status, text } */
function rawRequest(port, bytes) {
	return new Promise((resolve, reject) => {
		const sock = net.connect(port, '127.0.0.1', () => sock.end(Buffer.from(bytes, 'latin1')));
		const chunks = [];
		sock.setTimeout(8000, () => sock.destroy(new Error('raw request: timeout')));
		sock.on('data', (c) => chunks.push(c));
		sock.on('error', reject);
		sock.on('close', () => {
			const text = Buffer.concat(chunks).toString('latin1');
			resolve({ status: Number((/^HTTP\/1\.1 (\d{3})/.exec(text) || [])[1]), text });
		});
	});
}

/*
 * Starts SERVER_JS with env on a free port; resolves when /healthz answers,
 * or when the process exits first ({ exited: code }).  log() is its output.
 */
async function startServer(env, { port } = {}) {
	port = port || await freePort();
	let out = '';
	const proc = spawn(process.execPath, [SERVER_JS], {
		env: { ...process.env, OTP_LINK_DEV: '', TRUST_PROXY: '', PUBLIC_URL: '', ...env, PORT: String(port) },
		cwd: path.dirname(SERVER_JS),
		stdio: ['ignore', 'pipe', 'pipe'],
	});
	started.push(proc);
	proc.stdout.on('data', (d) => { out += d; });
	proc.stderr.on('data', (d) => { out += d; });
	let exited = null;
	proc.on('exit', (code) => { exited = code ?? -1; });
	const stop = () => new Promise((resolve) => {
		if (exited !== null)
			return resolve();
		proc.once('exit', () => resolve());
		proc.kill('SIGTERM');
		setTimeout(() => proc.kill('SIGKILL'), 4000).unref();
	});
	for (let i = 0; i < 100; i++) {
		if (exited !== null)
			return { exited, log: () => out, stop, port };
		try {
			if ((await request(port, 'GET', '/healthz', { headers: hostOf(env) })).status === 200)
				return { exited: null, log: () => out, stop, port, proc };
		} catch {
			/* not yet */
		}
		await new Promise((r) => setTimeout(r, 100));
	}
	await stop();
	throw new Error(`the server did not start:\n${out}`);
}

async function main() {
	const db = new Client({ statement_timeout: 5000, connectionTimeoutMillis: 5000 });
	await db.connect();
	const q = async (sql, args) => (await db.query(sql, args)).rows;
	const inst = (await q("SELECT id::text FROM otp_link.instances WHERE phone = '15550100001'"))[0].id;
	let chatN = 0;

	/*
	 * A verified link made directly in the database (as another application
	 * sharing it would): its {link} token.  binding may be null.
	 */
	async function verifiedToken(instance, binding, metadata) {
		const l = (await q(`SELECT otp_link.otp_link_generate(instance => $1, binding => $2, metadata => $3,
			link_url => 'https://elsewhere.example/done?token={token}') AS l`, [instance, binding, JSON.stringify(metadata)]))[0].l;
		chatN++;
		const c = (await q('SELECT otp_link.otp_link_consume_message($1, $2, instance => $3) AS c',
			[`1555020${String(chatN).padStart(4, '0')}@c.us`, `[${l.code}]`, instance]))[0].c;
		expect(c.outcome === 'verified', `consume: ${JSON.stringify(c)}`);
		const d = await q(`SELECT substring(payload->>'body' FROM 'token=([A-Za-z0-9_-]+)') AS t FROM otp_link.deliveries
			WHERE link_id = $1 AND kind = 'reply' AND event = 'reply.success'`, [l.uuid]);
		return { token: d[0].t, uuid: l.uuid };
	}
	const redeemedAt = async (uuid) => (await q('SELECT redeemed_at FROM otp_link.links WHERE id = $1', [uuid]))[0].redeemed_at;

	const evilPort = await freePort();
	const victimPort = await freePort();
	const VICTIM = `http://login.app.localhost:${victimPort}`;
	const EVIL = `http://evil.app.localhost:${evilPort}`;
	const VHOST = { Host: `login.app.localhost:${victimPort}` };
	const JSON_VHOST = { 'Content-Type': 'application/json', ...VHOST };
	/* the tests share the rate-limit bucket of 127.0.0.1 (10 per 15 minutes): a throw-away cluster, so empty it */
	const freshLocalBucket = () => q("UPDATE otp_link.links SET rate_key = 'spent:' || rate_key WHERE rate_key = 'ip:127.0.0.1'");

	/* the attacker's page: tosses cookies for the parent domain, then sends the victim on */
	const tossed = { login: null, sid: null, link: null };
	const evil = http.createServer((req, res) => {
		const u = new URL(req.url, EVIL);
		/* ?nbsp=1: only "\xa0__Host-name" (a raw 0xA0 byte; Chromium does not take it for a __Host- name) */
		const plant = (name, value) => (u.searchParams.get('nbsp') ?
			['/', '/login', '/login/complete'].map((p) => `\xa0__Host-${name}=${value}; Domain=app.localhost; Path=${p}`) :
			['/', '/login', '/login/complete'].flatMap((p) => [
				`${name}=${value}; Domain=app.localhost; Path=${p}`,
				`__Host-${name}=${value}; Domain=app.localhost; Path=/; Secure`,
			]));
		if (u.pathname === '/toss-binding') {
			res.writeHead(302, { 'Set-Cookie': plant(`otp_login_${tossed.login.key}`, `${tossed.login.uuid}.${tossed.login.binding}`), Location: tossed.link });
		} else if (u.pathname === '/toss-sid') {
			res.writeHead(302, { 'Set-Cookie': plant('sid', tossed.sid), Location: `${VICTIM}/` });
		} else
			res.writeHead(404);
		res.end();
	});
	await new Promise((r) => evil.listen(evilPort, '127.0.0.1', r));

	/* Chromium resolves *.localhost to loopback itself; the rule makes it 127.0.0.1, where the servers listen */
	const browser = await launch(['--host-resolver-rules=MAP *.localhost 127.0.0.1']);
	const outside = [];

	try {
		const victim = await startServer({ OTP_LINK_DEV: '1', PUBLIC_URL: VICTIM }, { port: victimPort });
		expect(victim.exited === null, `the victim server exited:\n${victim.log()}`);
		const prod = await startServer({ PUBLIC_URL: PROD_URL, TRUST_PROXY: '1' });
		expect(prod.exited === null, `the prod server exited:\n${prod.log()}`);

		/* the attacker's own login on the victim's site, verified from the attacker's phone, not redeemed */
		async function attackerLink() {
			await freshLocalBucket();
			const s = await request(victimPort, 'POST', '/login/start', { headers: JSON_VHOST, body: {} });
			expect(s.status === 200, `start: HTTP ${s.status} ${s.body}`);
			const login = loginCookie(s);
			const draft = JSON.parse(s.body).draft;
			const sent = await request(victimPort, 'POST', '/dev/whatsapp/send', { headers: JSON_VHOST, body: { from: ATTACKER_PHONE, text: draft } });
			expect(JSON.parse(sent.body).outcome === 'verified', `send: ${sent.body}`);
			const m = await request(victimPort, 'GET', `/dev/whatsapp/messages?phone=${ATTACKER_DIGITS}`, { headers: VHOST });
			const body = JSON.parse(m.body).messages.pop().body;
			const link = /https?:\/\/\S+/.exec(body)[0];
			expect(link.startsWith(`${VICTIM}/login/complete?login=${login.key}&token=`), `the {link}: ${link}`);
			return { login, link, uuid: login.uuid, path: link.slice(VICTIM.length) };
		}

		/* ---------------------------------------------------------------- 2: cookie tossing */

		await check('#2 __Host- cookies (Secure, HttpOnly, Path=/, no Domain), Secure even with PUBLIC_URL "HTTPS://" in upper case (#6)', async () => {
			const r = await request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', 'X-Forwarded-For': '198.51.100.20' }, body: {} });
			expect(r.status === 200, `HTTP ${r.status}`);
			const cookies = r.headers['set-cookie'] || [];
			expect(cookies.length === 1 && cookies[0].startsWith('__Host-otp_login_'), `Set-Cookie: ${JSON.stringify(cookies)}`);
			for (const c of cookies) {
				const attrs = c.split(';').map((a) => a.trim().toLowerCase());
				expect(c.startsWith('__Host-') && attrs.includes('path=/') && attrs.includes('secure') &&
					attrs.includes('httponly') && attrs.includes('samesite=lax') && !attrs.some((a) => a.startsWith('domain=')), `cookie ${c}`);
			}
		});

		await check('#2 HSTS on https (and not on a plain-http loopback address)', async () => {
			const r = await request(prod.port, 'GET', '/');
			const hsts = r.headers['strict-transport-security'] || '';
			expect(/^max-age=(\d+)/.test(hsts) && Number(/max-age=(\d+)/.exec(hsts)[1]) >= 15552000, `Strict-Transport-Security: ${JSON.stringify(hsts)}`);
			const v = await request(victimPort, 'GET', '/', { headers: VHOST });
			expect(!v.headers['strict-transport-security'], 'HSTS on http');
		});

		await check('#2 the first cookie of a name wins (a planted later one is ignored)', async () => {
			const r = await request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', 'X-Forwarded-For': '198.51.100.21' }, body: {} });
			const l = loginCookie(r);
			const name = `__Host-otp_login_${l.key}`;
			const other = `${crypto.randomUUID()}.${crypto.randomBytes(32).toString('base64url')}`;
			const st = await request(prod.port, 'GET', `/login/status?login=${l.key}`, {
				headers: { Cookie: `${l.cookie}; ${name}=${other}; otp_login_${l.key}=${other}` },
			});
			expect(st.status === 200 && JSON.parse(st.body).status === 'pending', `HTTP ${st.status} ${st.body}`);
		});

		await check('#2 (review of #18, 1) a cookie name that is not a token ("\\xa0__Host-sid", "\\v__Host-sid", "\\f__Host-sid") is not read as __Host-sid', async () => {
			const own = await attackerLink();
			const done = await request(victimPort, 'GET', own.path, { headers: { ...VHOST, Cookie: own.login.cookie } });
			expect(done.status === 303, `the attacker's own login: HTTP ${done.status}`);
			const sid = setCookies(done)['__Host-sid'];
			const plain = await rawRequest(victimPort, `GET / HTTP/1.1\r\nHost: ${VHOST.Host}\r\nCookie: __Host-sid=${sid}\r\nConnection: close\r\n\r\n`);
			expect(plain.status === 200 && /id="welcome"/.test(plain.text), `the session itself does not work: HTTP ${plain.status}`);
			for (const prefix of ['\xa0', '\x0b', '\x0c', ' \xa0', '\xa0 ']) {
				const r = await rawRequest(victimPort, `GET / HTTP/1.1\r\nHost: ${VHOST.Host}\r\nCookie: ${prefix}__Host-sid=${sid}\r\nConnection: close\r\n\r\n`);
				/* (Node itself answers 400 to some control characters in a header) */
				expect((r.status === 200 || r.status === 400) && !/id="welcome"/.test(r.text), `Cookie: ${JSON.stringify(prefix)}__Host-sid=<attacker's session>: HTTP ${r.status}, logged in`);
			}
		});

		const [vctx, vpage] = await newContext(browser, ALLOWED_HOSTS, outside);
		/* the victim has a login of its own in progress, whose cookie the tossed one must not displace */
		async function victimStarts() {
			await vctx.clearCookies();
			await freshLocalBucket();
			await vpage.goto(`${VICTIM}/`);
			await vpage.click('#start');
			await vpage.locator('#step-link').waitFor({ state: 'visible' });
		}
		for (const [variant, query, plantedName] of [['Domain=app.localhost', '', (k) => `otp_login_${k}`], ['"\\xa0__Host-" (a raw 0xA0 byte)', '?nbsp=1', (k) => `__Host-otp_login_${k}`]]) {
			await check(`#2 Chromium: a sibling host tosses the attacker's binding (${variant}) and sends the victim to the attacker's link: not logged in as the attacker, link not used up`, async () => {
				const attacker = await attackerLink();
				await victimStarts();
				Object.assign(tossed, { login: attacker.login, link: attacker.link });
				const r = await vpage.goto(`${EVIL}/toss-binding${query}`);
				const planted = (await vctx.cookies(VICTIM)).map((c) => `${c.name}@${c.domain}`);
				expect(planted.some((c) => c.endsWith(`${plantedName(attacker.login.key)}@.app.localhost`)), `the toss itself did not work: ${planted.join(', ')}`);
				/* (playwright reports the "\xa0__Host-" name without its 0xA0; Chromium sends it with) */
				expect(query || !planted.some((c) => c.startsWith('__Host-') && c.endsWith('@.app.localhost')), `Chromium kept a __Host- cookie with Domain: ${planted.join(', ')}`);
				expect(new URL(vpage.url()).host === `login.app.localhost:${victimPort}`, `at ${vpage.url()}`);
				const home = await vpage.goto(`${VICTIM}/`);
				expect(home.status() === 200, `HTTP ${home.status()}`);
				if (await vpage.locator('#welcome').count())
					throw new Error(`the victim is logged in as ${await vpage.locator('#who-phone').innerText()} (redeem answered HTTP ${r.status()})`);
				expect(r.status() === 403, `redeem answered HTTP ${r.status()}, not 403 binding_mismatch`);
				expect(await redeemedAt(attacker.uuid) === null, 'the attacker\'s link was used up');
			});

			await check(`#2 Chromium: a sibling host tosses the attacker's session id (${variant}): the victim is not logged in as the attacker`, async () => {
				const own = await attackerLink();
				const done = await request(victimPort, 'GET', own.path, { headers: { ...VHOST, Cookie: own.login.cookie } });
				expect(done.status === 303, `the attacker's own login: HTTP ${done.status}`);
				tossed.sid = setCookies(done)['__Host-sid'];
				await vctx.clearCookies();
				await vpage.goto(`${EVIL}/toss-sid${query}`);
				expect(new URL(vpage.url()).host === `login.app.localhost:${victimPort}`, `at ${vpage.url()}`);
				const planted = (await vctx.cookies(VICTIM)).map((c) => `${c.name}@${c.domain}`);
				expect(planted.some((c) => c.endsWith(`${query ? '__Host-sid' : 'sid'}@.app.localhost`)), `the toss itself did not work: ${planted.join(', ')}`);
				if (await vpage.locator('#welcome').count())
					throw new Error(`the victim is logged in as ${await vpage.locator('#who-phone').innerText()}`);
				expect(await vpage.locator('#start').count() === 1, 'no login button');
			});
		}

		/* ---------------------------------------------------------------- 3: tokens of other flows */

		const B = crypto.randomBytes(32).toString('base64url');
		const K = crypto.randomBytes(12).toString('base64url');
		const withBinding = { Cookie: `__Host-otp_login_${K}=${crypto.randomUUID()}.${B}; otp_login_${K}=x.${B}` };
		await check('#3 /login/complete refuses tokens of another instance, another purpose, an unbound link (invalid_token, not used up); its own works', async () => {
			const other = (await q(`SELECT (otp_link.otp_link_instance_create('+1 555 010 0002', 'another app')->>'uuid') AS id`))[0].id;
			const foreign = [
				['another instance', await verifiedToken(other, B, { purpose: 'login', return_to: '/' })],
				['purpose newsletter_optin', await verifiedToken(inst, B, { purpose: 'newsletter_optin', return_to: '/' })],
				['an unbound link', await verifiedToken(inst, null, { purpose: 'login', return_to: '/' })],
				['no purpose', await verifiedToken(inst, B, { return_to: '/' })],
			];
			for (const [what, l] of foreign) {
				const r = await request(prod.port, 'GET', `/login/complete?login=${K}&token=${l.token}`, { headers: withBinding });
				expect(r.status === 404 && /id="result">invalid_token</.test(r.body), `${what}: HTTP ${r.status} ${r.headers.location || ''}`);
				expect(!(r.headers['set-cookie'] || []).some((c) => /sid=/.test(c)), `${what}: a session cookie`);
				expect(await redeemedAt(l.uuid) === null, `${what}: the token was used up`);
			}
			const own = await verifiedToken(inst, B, { purpose: 'login', return_to: '/' });
			const r = await request(prod.port, 'GET', `/login/complete?login=${K}&token=${own.token}`, { headers: withBinding });
			expect(r.status === 303 && (r.headers['set-cookie'] || []).some((c) => /sid=/.test(c)), `own link: HTTP ${r.status}`);
		});

		/* ---------------------------------------------------------------- 4: return_to */

		await check('#4 return_to that a browser would resolve to another origin (/\\host, /<tab>/host, //host, a URL) goes to / instead', async () => {
			const bad = ['/\\evil.example/x', '/\t/evil.example/x', '/\\\\evil.example', '//evil.example/', '/\\/evil.example',
				'https://evil.example/', '/\n/evil.example', 'javascript:alert(1)'];
			for (const rt of bad) {
				const l = await verifiedToken(inst, B, { purpose: 'login', return_to: rt });
				const r = await request(prod.port, 'GET', `/login/complete?login=${K}&token=${l.token}`, { headers: withBinding });
				expect(r.status === 303, `${JSON.stringify(rt)}: HTTP ${r.status}`);
				const to = new URL(r.headers.location, PROD_ORIGIN);
				expect(to.origin === PROD_ORIGIN && to.pathname === '/', `${JSON.stringify(rt)} sends the browser to ${to.href} (Location ${JSON.stringify(r.headers.location)})`);
			}
		});

		await check('#4 a return_to of this site survives, from the login page\'s ?return_to to the redirect', async () => {
			const s = await request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', 'X-Forwarded-For': '198.51.100.22' }, body: { return_to: '/account?tab=2#keys' } });
			const { uuid } = loginCookie(s);
			const m = await q('SELECT metadata FROM otp_link.links WHERE id = $1', [uuid]);
			expect(m[0].metadata.return_to === '/account?tab=2#keys' && m[0].metadata.purpose === 'login', `metadata ${JSON.stringify(m[0].metadata)}`);
			const l = await verifiedToken(inst, B, { purpose: 'login', return_to: '/account?tab=2#keys' });
			const r = await request(prod.port, 'GET', `/login/complete?login=${K}&token=${l.token}`, { headers: withBinding });
			expect(new URL(r.headers.location, PROD_ORIGIN).href === `${PROD_ORIGIN}/account?tab=2#keys`, `Location ${r.headers.location}`);
		});

		/* ---------------------------------------------------------------- 5: dev mode */

		await check('#5 OTP_LINK_DEV=1 refuses to start unless PUBLIC_URL is a loopback address', async () => {
			for (const url of ['https://login.example.com', 'http://192.0.2.10:8080', 'https://127.0.0.1.nip.io']) {
				const s = await startServer({ OTP_LINK_DEV: '1', PUBLIC_URL: url });
				if (s.exited === null) {
					const r = await request(s.port, 'GET', '/dev/whatsapp/messages?phone=15550100199');
					await s.stop();
					throw new Error(`started with PUBLIC_URL ${url}; /dev/whatsapp/messages answered HTTP ${r.status}`);
				}
				expect(s.exited !== 0 && /OTP_LINK_DEV=1 is refused|must be https/.test(s.log()), `PUBLIC_URL ${url}: exit ${s.exited}, ${s.log()}`);
			}
		});

		await check('#5 (review of #18, 2) OTP_LINK_DEV=1 answers only this machine\'s browser: a proxy header or another Host gets 403 and sends nothing', async () => {
			const before = (await q('SELECT count(*)::int AS n FROM inbox'))[0].n;
			const send = { from: ATTACKER_PHONE, text: 'hello' };
			const refused = [
				['X-Forwarded-For', { ...JSON_VHOST, 'X-Forwarded-For': '203.0.113.9' }],
				['Forwarded', { ...JSON_VHOST, Forwarded: 'for=203.0.113.9' }],
				['X-Real-IP', { ...JSON_VHOST, 'X-Real-IP': '203.0.113.9' }],
				['Host of a tunnel', { 'Content-Type': 'application/json', Host: 'abc123.ngrok.example' }],
				['Host 127.0.0.1 (not PUBLIC_URL\'s)', { 'Content-Type': 'application/json', Host: `127.0.0.1:${victimPort}` }],
			];
			for (const [what, headers] of refused) {
				const r = await request(victimPort, 'POST', '/dev/whatsapp/send', { headers, body: send });
				expect(r.status === 403, `${what}: /dev/whatsapp/send answered HTTP ${r.status} ${r.body}`);
				const m = await request(victimPort, 'GET', `/dev/whatsapp/messages?phone=${ATTACKER_DIGITS}`, { headers });
				expect(m.status === 403, `${what}: /dev/whatsapp/messages answered HTTP ${m.status}`);
				const h = await request(victimPort, 'GET', '/', { headers });
				expect(h.status === 403, `${what}: / answered HTTP ${h.status}`);
			}
			expect((await q('SELECT count(*)::int AS n FROM inbox'))[0].n === before, 'a refused request wrote to the inbox');
			const ok = await request(victimPort, 'POST', '/dev/whatsapp/send', { headers: JSON_VHOST, body: send });
			expect(ok.status === 200, `this machine's browser: HTTP ${ok.status} ${ok.body}`);
		});

		await check('#6 (review of #18, 4) unparsable request targets (//a:99999/, //[, //x:1:2/, //%5B/, http://[::1) are 4xx, not 500', async () => {
			for (const t of ['//a:99999/', '//[', '//x:1:2/', '//%5B/', 'http://[::1', 'http://x:badport/', '*']) {
				for (const [port, host] of [[prod.port, 'login.example.test'], [victimPort, VHOST.Host]]) {
					const r = await rawRequest(port, `GET ${t} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
					expect(r.status >= 400 && r.status < 500, `GET ${t}: HTTP ${r.status}`);
				}
			}
			const r = await rawRequest(prod.port, 'GET //evil.example/login/complete?token=x HTTP/1.1\r\nHost: login.example.test\r\nConnection: close\r\n\r\n');
			expect(r.status === 404, `GET //evil.example/login/complete is routed: HTTP ${r.status}`);
		});

		await check('#6 (review of #18, 4) JSON bodies that are not an object (null, [], 5, "x") are 400, not 500, and leak no stack', async () => {
			for (const body of ['null', '[]', '5', '"x"', '{']) {
				const a = await request(victimPort, 'POST', '/dev/whatsapp/send', { headers: JSON_VHOST, body });
				expect(a.status === 400 && !/at \S+ \(|node:|\.js:\d/.test(a.body), `/dev/whatsapp/send ${body}: HTTP ${a.status} ${a.body}`);
				const b = await request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', 'X-Forwarded-For': '198.51.100.23' }, body });
				expect(b.status === 400 && !/at \S+ \(|node:|\.js:\d/.test(b.body), `/login/start ${body}: HTTP ${b.status} ${b.body}`);
			}
		});

		/* ---------------------------------------------------------------- 6: bad input */

		await check('#6 a malformed cookie (foo=%), even another application\'s, does not break the pages', async () => {
			for (const c of ['foo=%', 'foo=%E0%A4%A; bar=1', '=%', 'x=%%%; __Host-sid=%zz']) {
				const r = await request(prod.port, 'GET', '/', { headers: { Cookie: c } });
				expect(r.status === 200, `Cookie ${c}: HTTP ${r.status}`);
				const s = await request(prod.port, 'GET', '/login/status', { headers: { Cookie: c } });
				expect(s.status === 404, `status with Cookie ${c}: HTTP ${s.status}`);
			}
		});

		await check('#6 bad otp_pending values and tokens are 4xx, not 500', async () => {
			for (const v of ['-'.repeat(36), 'zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz', crypto.randomUUID(), '%00']) {
				const r = await request(prod.port, 'GET', `/login/status?login=${K}`, { headers: { Cookie: `__Host-otp_login_${K}=${v}.${B}; otp_login_${K}=${v}.${B}` } });
				expect(r.status === 404, `otp_pending ${v}: HTTP ${r.status} ${r.body}`);
			}
			for (const t of ['%00', '%FF', 'a%00b', encodeURIComponent('é'.repeat(10)), 'A'.repeat(300), '%E2%80%AE']) {
				const r = await request(prod.port, 'GET', `/login/complete?token=${t}`, { headers: withBinding });
				expect(r.status >= 400 && r.status < 500, `token ${t}: HTTP ${r.status}`);
			}
		});

		/* ---------------------------------------------------------------- 1: rate limit behind a proxy (last: on the old code, its
		 * shared rate key would make the checks above fail for another reason) */

		await check('#1 TRUST_PROXY=1: the rate limit is per client (X-Forwarded-For), and a spoofed X-Forwarded-For does not get around it', async () => {
			const start = (xff) => request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', 'X-Forwarded-For': xff }, body: {} });
			for (let i = 0; i < 10; i++) {
				const r = await start(`10.9.8.${i}, 198.51.100.7`);
				expect(r.status === 200, `request ${i + 1} of client 198.51.100.7: HTTP ${r.status} ${r.body}`);
			}
			const over = await start('10.9.8.99, 198.51.100.7');
			expect(over.status === 429, `the 11th request of 198.51.100.7 (spoofed left part): HTTP ${over.status}`);
			const other = await start('198.51.100.8');
			expect(other.status === 200, `another client behind the same proxy: HTTP ${other.status} ${other.body}`);
		});

		await check('#1 (review of #18, 3) X-Forwarded-For hops with a port or brackets (1.2.3.4:443, [v6], [v6]:443) are that client, not the proxy', async () => {
			const keyOf = async (xff) => {
				const r = await request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', 'X-Forwarded-For': xff }, body: {} });
				expect(r.status === 200, `X-Forwarded-For ${xff}: HTTP ${r.status} ${r.body}`);
				return (await q('SELECT rate_key FROM otp_link.links WHERE id = $1', [loginCookie(r).uuid]))[0].rate_key;
			};
			for (const [xff, want] of [['198.51.101.1:44331', 'ip:198.51.101.1'], ['10.0.0.1, 198.51.101.2:1', 'ip:198.51.101.2'],
				['[2001:db8:55:1::1]', 'ip:2001:db8:55:1::/64'], ['[2001:db8:55:2::1]:443', 'ip:2001:db8:55:2::/64'],
				['198.51.101.3', 'ip:198.51.101.3']]) {
				const got = await keyOf(xff);
				expect(got === want, `X-Forwarded-For ${xff}: rate_key ${got}, not ${want}`);
			}
		});

		await check('#1 (review of #18, 3) TRUST_PROXY set and no usable hop (no X-Forwarded-For, "unknown", a name): 400 and a warning, never the proxy\'s shared address', async () => {
			for (const headers of [{}, { 'X-Forwarded-For': 'unknown' }, { 'X-Forwarded-For': 'proxy.internal:80' }, { 'X-Forwarded-For': '[198.51.101.4' }]) {
				const r = await request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', ...headers }, body: {} });
				expect(r.status === 400 && !loginCookie(r), `X-Forwarded-For ${JSON.stringify(headers['X-Forwarded-For'])}: HTTP ${r.status} ${r.body}`);
			}
			await new Promise((r) => setTimeout(r, 200));
			expect(/WARNING: TRUST_PROXY=1 but a request's X-Forwarded-For/.test(prod.log()), `no warning:\n${prod.log()}`);
			expect((prod.log().match(/WARNING: TRUST_PROXY=1 but/g) || []).length === 1, 'the warning is not rate-limited');
		});

		await check('#1 IPv6 clients are limited per /64, IPv4-mapped addresses as IPv4', async () => {
			const start = (xff) => request(prod.port, 'POST', '/login/start', { headers: { 'Content-Type': 'application/json', 'X-Forwarded-For': xff }, body: {} });
			for (let i = 0; i < 10; i++) {
				const r = await start(`2001:db8:7:7:${(i + 1).toString(16)}::${i + 1}`);
				expect(r.status === 200, `request ${i + 1}: HTTP ${r.status}`);
			}
			expect((await start('2001:0db8:0007:0007:ffff:1:2:3')).status === 429, 'another address of the same /64 is not limited');
			expect((await start('2001:db8:7:8::1')).status === 200, 'the next /64 is limited');
			for (let i = 0; i < 10; i++)
				await start('::ffff:198.51.100.9');
			expect((await start('198.51.100.9')).status === 429, '198.51.100.9 and ::ffff:198.51.100.9 are not one client');
		});

		await check('#1 without TRUST_PROXY, a public PUBLIC_URL (so a proxy) is warned about at start, and X-Forwarded-For at the first request', async () => {
			const s = await startServer({ PUBLIC_URL: 'https://login.example.test' });
			try {
				expect(s.exited === null, `exited:\n${s.log()}`);
				expect(/WARNING:.*TRUST_PROXY is not set/s.test(s.log()), `no warning at start:\n${s.log()}`);
				await request(s.port, 'GET', '/', { headers: { 'X-Forwarded-For': '198.51.100.10' } });
				await new Promise((r) => setTimeout(r, 200));
				expect(/X-Forwarded-For but TRUST_PROXY is not set/.test(s.log()), `no warning on X-Forwarded-For:\n${s.log()}`);
			} finally {
				await s.stop();
			}
		});

		/* ---------------------------------------------------------------- 7 and the README */

		await check('the README says how to run behind a proxy (TRUST_PROXY) and to keep the app role\'s parameters out of the server log, and names the inherent limits', async () => {
			const readme = fs.readFileSync(README, 'utf8');
			for (const want of ['TRUST_PROXY', 'X-Forwarded-For', 'log_parameter_max_length = 0', 'log_parameter_max_length_on_error', 'Strict-Transport-Security', '__Host-',
				'Serve nothing else on the login host name, on any port', 'forwards the reply\'s link', 'statement parameter of both', '/48', 'cookie bomb', 'append more than one address'])
				expect(readme.includes(want), `README does not mention ${want}`);
		});

		await check('no request left the loopback hosts', async () => {
			expect(outside.length === 0, `requests to ${outside.join(', ')}`);
		});

		await vctx.close();
	} finally {
		await browser.close();
		await new Promise((r) => evil.close(r));
		for (const p of started)
			if (p.exitCode === null && p.signalCode === null)
				p.kill('SIGTERM');
		await db.end();
	}
}

run(main, OVERALL_MS, () => started.forEach((p) => p.kill('SIGKILL')));
