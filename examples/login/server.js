'use strict';
/*
 * examples/login/server.js: a "Log in with WhatsApp" page on top of otp_link.
 *
 *   GET  /                     the page (who is logged in, or the login button)
 *   POST /login/start          new browser binding (HttpOnly cookie) + otp_link_generate
 *   GET  /login/status         otp_link_status of this browser's pending link
 *   GET  /login/complete       the {link} of the WhatsApp reply: otp_link_redeem(token, binding)
 *   POST /logout
 *   GET  /healthz
 *
 * With OTP_LINK_DEV=1 (run.sh and test.sh set it), two development-only
 * endpoints stand in for the user's phone and the WhatsApp provider:
 *
 *   POST /dev/whatsapp/send      the phone sends a message: INSERT INTO the inbox table
 *   GET  /dev/whatsapp/messages  the provider hands the held replies to that phone
 *
 * Environment: PGHOST, PGPORT, PGUSER, PGDATABASE (read by `pg`), PORT (3000),
 * PUBLIC_URL (http://127.0.0.1:PORT; https:// unless a loopback address),
 * TRUST_PROXY (how many reverse proxies in front of the server append to
 * X-Forwarded-For; unset: none), WHATSAPP_NUMBER (the instance's number),
 * OTP_LINK_INSTANCE (an existing instance uuid; otherwise one is found or
 * created for WHATSAPP_NUMBER), LINK_TTL (seconds, 600), INBOX_TABLE (inbox).
 */
const http = require('node:http');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const { Pool } = require('pg');
const QRCode = require('qrcode');

const HOST = '127.0.0.1';
const PORT = intEnv('PORT', 3000, 1, 65535);
const PUBLIC = publicUrl(process.env.PUBLIC_URL || `http://${HOST}:${PORT}`);
const PUBLIC_ORIGIN = PUBLIC.origin;
const PUBLIC_URL = PUBLIC_ORIGIN;
const HTTPS = PUBLIC.protocol === 'https:';
const TRUST_PROXY = process.env.TRUST_PROXY === undefined || process.env.TRUST_PROXY === '' ?
	null : intEnv('TRUST_PROXY', 0, 0, 16);
const WHATSAPP_NUMBER = process.env.WHATSAPP_NUMBER || '+1 555 010 0001';
const LINK_TTL = intEnv('LINK_TTL', 600, 30, 86400);
const DEV = process.env.OTP_LINK_DEV === '1';
const INBOX_TABLE = process.env.INBOX_TABLE || 'inbox';
const APP_NAME = 'otp_link demo';
const PURPOSE = 'login';		/* metadata.purpose of our links; otp_link_redeem accepts no other */
const SESSION_TTL_MS = 8 * 3600 * 1000;
const MAX_BODY = 16 * 1024;

/* The texts of the WhatsApp conversation; {link} is the one-time login URL. */
const MESSAGES = {
	prompt: 'Log me in to {name}',
	success: 'Here is your login link: {link}\nOpen it in the browser where you asked to log in. It works once.\nDo not share or forward this link, not even to someone who says they are from {name}: whoever opens it gets into your account.',
	failed: 'Login failed, please try again.',
	expired: 'This login request has expired, please ask for a new one.',
};

if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/.test(INBOX_TABLE)) {
	console.error(`INBOX_TABLE must be a plain (schema.)table name, not ${JSON.stringify(INBOX_TABLE)}`);
	process.exit(2);
}
/* the simulated phone lets anyone send "from" any number and read the replies: never on a real address */
if (DEV && !isLoopback(PUBLIC.hostname)) {
	console.error(`OTP_LINK_DEV=1 is refused: PUBLIC_URL ${PUBLIC_ORIGIN} is not a loopback address (127.0.0.0/8, [::1], localhost). Never switch the simulated phone on where others can reach it.`);
	process.exit(2);
}

const pool = new Pool({
	max: 5,
	connectionTimeoutMillis: 5000,
	idleTimeoutMillis: 10000,
	statement_timeout: 5000,
	application_name: 'otp_link login example',
});
pool.on('error', (err) => console.error('pg pool:', err.message));

let instanceId = null;
const sessions = new Map(); /* session id -> who logged in */

/*
 * PUBLIC_URL: an origin (scheme, host, port; no path), https unless the host
 * is a loopback address; browsers keep Secure cookies only from those.
 */
function publicUrl(value) {
	let u;
	try {
		u = new URL(value);
	} catch {
		u = null;
	}
	if (!u || !['http:', 'https:'].includes(u.protocol) || u.username || u.password ||
		u.pathname !== '/' || u.search || u.hash) {
		console.error(`PUBLIC_URL must be an origin such as https://login.example.com, not ${JSON.stringify(value)}`);
		process.exit(2);
	}
	if (u.protocol !== 'https:' && !isLoopback(u.hostname)) {
		console.error(`PUBLIC_URL ${u.origin} must be https:// (only a loopback address may use http://): the cookies are Secure`);
		process.exit(2);
	}
	return u;
}

/* whether a URL's hostname is a loopback address (or a localhost name, which browsers resolve to one) */
function isLoopback(hostname) {
	const h = hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
	return h === 'localhost' || h.endsWith('.localhost') || h === '::1' ||
		(net.isIPv4(h) && h.startsWith('127.'));
}

function intEnv(name, dflt, min, max) {
	const v = process.env[name] === undefined || process.env[name] === '' ? dflt : Number(process.env[name]);
	if (!Number.isInteger(v) || v < min || v > max) {
		console.error(`${name} must be an integer between ${min} and ${max}`);
		process.exit(2);
	}
	return v;
}

/* ---------------------------------------------------------------- HTTP helpers */

function esc(s) {
	return String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
}

/*
 * The cookies.  "__Host-" names: browsers keep them only with Secure,
 * Path=/ and no Domain, so a sibling host (evil.example.com) cannot plant
 * one for us (cookie tossing).  Browsers accept Secure cookies from https
 * and from loopback addresses, which is all PUBLIC_URL may be.  Each login
 * in progress has a cookie of its own, __Host-otp_login_<key> = <link
 * uuid>.<binding>, so that two tabs of one browser do not overwrite each
 * other's login; <key> is in the {link} (?login=) and in the tab's page.
 */
const COOKIE = { login: '__Host-otp_login_', sid: '__Host-sid' };
const MAX_LOGINS = 3;		/* logins in progress kept per browser; a new one drops the oldest */
const LOGIN_KEY_RE = /^[A-Za-z0-9_-]{16}$/;

/* RFC 6265 cookie-name: an RFC 7230 token (visible ASCII but separators) */
const TOKEN_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/*
 * The cookies of a request, name -> value.  A name is taken exactly as sent
 * but for the spaces and tabs around it (the only whitespace RFC 6265
 * allows there): a name that is not a token ("\xa0__Host-sid", which Node
 * reads from a raw 0xA0 byte and JavaScript's trim() would turn into
 * "__Host-sid") is skipped, never normalised into one of ours, because a
 * browser does not treat it as a __Host- cookie and so lets any sibling
 * host set it.  The first of a name wins (a browser sends the more
 * specific, then the older one first); a value that does not decode is
 * skipped, whatever cookie it is (another application's on the same
 * domain, say).
 */
function parseCookies(req) {
	const out = Object.create(null);
	for (const part of (req.headers.cookie || '').split(';')) {
		const i = part.indexOf('=');
		const name = part.slice(0, Math.max(i, 0)).replace(/^[ \t]+|[ \t]+$/g, '');
		if (i <= 0 || !TOKEN_NAME_RE.test(name)) {
			if (/__host-/i.test(part.slice(0, Math.max(i, 0))))
				warnEvery('cookie-name', 'WARNING: a request carries a cookie whose name only looks like one of ours (not an RFC 6265 token): ignored. Someone on a sibling host may be trying to plant cookies (cookie tossing).');
			continue;
		}
		if (name in out)
			continue;
		try {
			out[name] = decodeURIComponent(part.slice(i + 1).replace(/^[ \t]+|[ \t]+$/g, ''));
		} catch {
			out[name] = undefined;	/* not ours, or tampered with: as if absent (and no later one instead) */
		}
	}
	return out;
}

/* the login in progress of key (from the request's cookie): { uuid, binding } or null */
function pendingLogin(req, key) {
	if (typeof key !== 'string' || !LOGIN_KEY_RE.test(key))
		return null;
	const m = /^([0-9a-f-]{36})\.([A-Za-z0-9_-]{43})$/.exec(parseCookies(req)[COOKIE.login + key] || '');
	return m && UUID_RE.test(m[1]) ? { uuid: m[1], binding: m[2] } : null;
}

function cookie(name, value, { maxAge } = {}) {
	let c = `${name}=${encodeURIComponent(value)}; Path=/; Secure; HttpOnly; SameSite=Lax`;
	if (maxAge !== undefined)
		c += `; Max-Age=${maxAge}`;
	return c;
}

function clearCookie(name) {
	return cookie(name, '', { maxAge: 0 });
}

/* ---------------------------------------------------------------- client address */

/*
 * The client's address: the socket's peer, or, with TRUST_PROXY=n, the
 * address n hops back in X-Forwarded-For (as Express's "trust proxy" = n):
 * each trusted proxy appends the address it received the request from, so
 * whatever the client wrote itself stays further left and is never used.
 * A hop may carry a port or brackets (1.2.3.4:5678, [2001:db8::1]:443, as
 * some load balancers write it).  Returns null when a hop that a trusted
 * proxy should have written is missing or is not an address: the proxy is
 * not configured as TRUST_PROXY says, and neither fallback is safe (the
 * proxy's address would put every client in one rate-limit bucket, an
 * address further left is the client's own choice).
 */
function clientAddress(req) {
	if (!TRUST_PROXY)
		return canonicalIp(req.socket.remoteAddress || '');
	const xff = req.headers['x-forwarded-for'];
	const hops = xff ? xff.split(',').map((a) => a.trim()).reverse() : [];
	const hop = hops.length >= TRUST_PROXY ? hopAddress(hops[TRUST_PROXY - 1]) : null;
	if (hop === null || hops.slice(0, TRUST_PROXY - 1).some((h) => hopAddress(h) === null)) {
		warnEvery('xff-missing', `WARNING: TRUST_PROXY=${TRUST_PROXY} but a request's X-Forwarded-For (${JSON.stringify(xff ?? null)}) has no address ${TRUST_PROXY} hop(s) back: refused with 400. Does every proxy append the address it received the request from?`);
		return null;
	}
	return canonicalIp(hop);
}

/* one X-Forwarded-For entry as a bare IP address (port and brackets removed), or null */
function hopAddress(hop) {
	const m = /^\[([^\]]+)\](?::\d{1,5})?$/.exec(hop) || /^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$/.exec(hop);
	const a = m ? m[1] : hop;
	if (m && !net.isIPv6(a) && !net.isIPv4(a))
		return null;
	return net.isIP(a) ? a : null;
}

/* IPv4-mapped IPv6 as IPv4; any other IPv6 address as its /64 (one subscriber's network) */
function canonicalIp(a) {
	const v4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
	if (v4)
		return v4[1];
	if (!net.isIPv6(a))
		return a;
	const [head, tail = ''] = a.toLowerCase().split('::');
	const h = head ? head.split(':') : [];
	const t = a.includes('::') && tail ? tail.split(':') : [];
	const groups = [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
	return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

const warned = new Map();	/* key -> when last said */
function warnOnce(key, text) {
	if (!warned.has(key)) {
		warned.set(key, Date.now());
		console.error(text);
	}
}

/* a warning at most once a minute per key (the events that cause it can come from anyone) */
function warnEvery(key, text) {
	if (Date.now() - (warned.get(key) ?? -Infinity) >= 60000) {
		warned.set(key, Date.now());
		console.error(text);
	}
}

const BASE_HEADERS = {
	...(HTTPS ? { 'Strict-Transport-Security': 'max-age=31536000; includeSubDomains' } : {}),
	'Cache-Control': 'no-store',
	/* keeps the token of /login/complete from leaving; no-referrer would make form POSTs send "Origin: null" */
	'Referrer-Policy': 'same-origin',
	'X-Content-Type-Options': 'nosniff',
	'X-Frame-Options': 'DENY',
	'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
};

function send(res, status, type, body, headers = {}) {
	res.writeHead(status, { ...BASE_HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body), ...headers });
	res.end(body);
}

function sendJson(res, status, obj, headers = {}) {
	send(res, status, 'application/json; charset=utf-8', JSON.stringify(obj), headers);
}

function redirect(res, location, headers = {}) {
	res.writeHead(303, { ...BASE_HEADERS, Location: location, 'Content-Length': 0, ...headers });
	res.end();
}

function readJson(req) {
	return new Promise((resolve, reject) => {
		let size = 0;
		const chunks = [];
		req.on('data', (c) => {
			size += c.length;
			if (size > MAX_BODY) {
				reject(Object.assign(new Error('request body too large'), { status: 413 }));
				req.destroy();
			} else
				chunks.push(c);
		});
		req.on('end', () => {
			if (chunks.length === 0)
				return resolve({});
			let v;
			try {
				v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
			} catch {
				return reject(Object.assign(new Error('invalid JSON'), { status: 400 }));
			}
			if (typeof v !== 'object' || v === null || Array.isArray(v))
				return reject(Object.assign(new Error('the body must be a JSON object'), { status: 400 }));
			resolve(v);
		});
		req.on('error', reject);
	});
}

/* A POST must come from our own pages (a cheap CSRF guard on top of SameSite). */
function sameOrigin(req) {
	const origin = req.headers.origin;
	return origin === undefined || origin === PUBLIC_ORIGIN;
}

function session(req) {
	const sid = parseCookies(req)[COOKIE.sid];
	const s = sid && sessions.get(sid);
	if (!s)
		return null;
	if (Date.now() - s.created > SESSION_TTL_MS) {
		sessions.delete(sid);
		return null;
	}
	return s;
}

function digitsOf(phone) {
	const d = String(phone || '').replace(/@c\.us$/, '').replace(/[\s+\-.()]/g, '');
	return /^[0-9]{8,15}$/.test(d) ? d : null;
}

function prettyTime(iso) {
	const t = new Date(iso);
	return Number.isNaN(t.getTime()) ? iso : t.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
}

function prettyPhone(digits) {
	return digits ? `+${digits}` : '';
}

/* +15••••••199: enough for the owner to recognise, too little to be of use to anyone else */
function maskedPhone(digits) {
	return digits ? `+${digits.slice(0, 2)}${'•'.repeat(digits.length - 5)}${digits.slice(-3)}` : null;
}

/*
 * return_to: an address on this site only.  Resolved as a browser would
 * resolve the Location header (backslashes, tabs, "//host" included) against
 * PUBLIC_URL; anything that lands on another origin is '/'.  Returns the
 * absolute URL, which leaves a browser nothing to reinterpret.
 */
function sameSiteUrl(value) {
	if (typeof value !== 'string' || !value.startsWith('/') || value.length > 2048)
		return `${PUBLIC_ORIGIN}/`;
	let u;
	try {
		u = new URL(value, PUBLIC_ORIGIN);
	} catch {
		return `${PUBLIC_ORIGIN}/`;
	}
	return u.origin === PUBLIC_ORIGIN ? u.href : `${PUBLIC_ORIGIN}/`;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const TOKEN_RE = /^[A-Za-z0-9_-]{1,256}$/;

/* ---------------------------------------------------------------- pages */

function layout(title, main, { dev = DEV } = {}) {
	return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(title)}</title>
<link rel="stylesheet" href="/static/style.css">
<script src="/static/app.js" defer></script>
</head>
<body data-dev="${dev ? '1' : '0'}">
<header class="top"><span class="logo">otp_link</span> <span class="muted">example login page</span></header>
<div class="wrap">
${main}
</div>
</body>
</html>
`;
}

function phonePanel() {
	if (!DEV)
		return '';
	return `<section class="phone" id="phone" aria-label="Simulated WhatsApp">
  <div class="phone-top">
    <div class="dev-badge">development only</div>
    <div class="phone-title">Simulated WhatsApp</div>
    <label class="from">Your number <input id="phone-from" value="+1 555 010 0199" inputmode="tel" autocomplete="off"></label>
  </div>
  <div class="chat-head">Chat with <b>${esc(APP_NAME)}</b> <span class="muted">${esc(prettyPhone(digitsOf(WHATSAPP_NUMBER)))}</span></div>
  <div class="chat" id="chat"><p class="chat-empty" id="chat-empty">Start a login: the message WhatsApp would pre-fill appears below.</p></div>
  <div class="composer">
    <textarea id="draft" rows="3" placeholder="Message" disabled></textarea>
    <button id="send" class="send" disabled>Send</button>
  </div>
  <p class="phone-note">Sending inserts the message into the <code>${esc(INBOX_TABLE)}</code> table, as a WhatsApp provider's webhook would; the trigger runs <code>otp_link_consume_message</code>.</p>
</section>`;
}

function homePage(s) {
	if (s) {
		const main = `<main class="card" id="welcome">
  <div class="ok-mark" aria-hidden="true">✓</div>
  <h1>You are logged in</h1>
  <dl class="who">
    <dt>Phone</dt><dd id="who-phone">${esc(prettyPhone(s.phone))}</dd>
    <dt>WhatsApp chat id</dt><dd id="who-chat">${esc(s.chatId)}</dd>
    <dt>Verified at</dt><dd>${esc(prettyTime(s.verifiedAt))}</dd>
    <dt>OTP link</dt><dd class="mono small">${esc(s.uuid)}</dd>
  </dl>
  <form method="post" action="/logout"><button class="secondary" id="logout">Log out</button></form>
</main>`;
		return layout('Logged in · otp_link demo', `<div class="grid one">${main}</div>`);
	}
	const main = `<main class="card" id="login">
  <h1>Log in to ${esc(APP_NAME)}</h1>
  <p class="lead">No password: send one WhatsApp message from your phone.</p>
  <div id="step-start">
    <button id="start" class="wa">Log in with WhatsApp</button>
  </div>
  <div id="step-link" hidden>
    <ol class="steps">
      <li>Scan the code with your phone, or open WhatsApp on this device.</li>
      <li>Send the pre-filled message (do not change it).</li>
      <li>Open the login link WhatsApp sends back, <b>in this browser</b>.</li>
    </ol>
    <div class="qr-box"><img id="qr" alt="QR code of the WhatsApp link" width="232" height="232"></div>
    <a id="wa-link" class="wa" target="_blank" rel="noopener noreferrer">Open WhatsApp</a>
    <p id="status" class="status pending" role="status" aria-live="polite">Waiting for your WhatsApp message…</p>
    <p class="muted small" id="expires"></p>
    <button id="restart" class="link-button">Start over</button>
  </div>
  <p id="error" class="error" role="alert" hidden></p>
</main>`;
	return layout('Log in · otp_link demo', `<div class="grid${DEV ? '' : ' one'}">${main}${phonePanel()}</div>`);
}

function errorPage(status, title, text) {
	const main = `<main class="card" id="problem" data-result="${esc(title.code)}">
  <div class="bad-mark" aria-hidden="true">!</div>
  <h1>${esc(title.text)}</h1>
  <p>${esc(text)}</p>
  <p class="muted small">otp_link_redeem result: <code id="result">${esc(title.code)}</code></p>
  <p><a href="/" class="secondary-link">Back to the login page</a></p>
</main>`;
	return [status, layout(`${title.text} · otp_link demo`, `<div class="grid one">${main}</div>`, { dev: false })];
}

const REDEEM_PROBLEMS = {
	binding_mismatch: [403, 'Wrong browser',
		'This login link was opened in a different browser from the one that asked for it. Open it in the browser where you clicked "Log in with WhatsApp". (The link is still valid there.) Do not share or forward this link to anyone: whoever opens it in the browser that asked for it gets into your account. If someone asked you to send them the link or the WhatsApp message, they are trying to take over your account.'],
	already_redeemed: [410, 'Link already used',
		'This login link has already been used. Each link works once; start a new login if you need one.'],
	token_expired: [410, 'Link expired',
		'This login link has expired. Start a new login.'],
	invalid_token: [404, 'Unknown link',
		'This login link is not valid.'],
};

/* ---------------------------------------------------------------- handlers */

async function startLogin(req, res) {
	if (!sameOrigin(req))
		return sendJson(res, 403, { error: 'cross-origin request refused' });
	const body = await readJson(req);
	const address = clientAddress(req);
	if (address === null)
		return sendJson(res, 400, { error: 'The server cannot tell your address (its proxy is misconfigured); try again later.' });
	/* the browser binding: 32 random bytes, only this browser has them (HttpOnly) */
	const binding = crypto.randomBytes(32).toString('base64url');
	/* which of this browser's logins in progress (one per tab): not secret, it picks the cookie */
	const key = crypto.randomBytes(12).toString('base64url');
	const linkUrl = `${PUBLIC_URL}/login/complete?login=${key}&token={token}`;
	/* where to go once logged in: a path of this site (checked again when used) */
	const back = sameSiteUrl(body.return_to);
	const returnTo = back.slice(PUBLIC_ORIGIN.length);
	let link;
	try {
		const r = await pool.query(
			`SELECT otp_link.otp_link_generate(instance => $1, expires => $2, name => $3,
				message => $4, binding => $5, link_url => $6, rate_key => $7,
				metadata => $8) AS link`,
			[instanceId, LINK_TTL, APP_NAME, JSON.stringify(MESSAGES), binding, linkUrl,
				`ip:${address}`, JSON.stringify({ purpose: PURPOSE, return_to: returnTo })]);
		link = r.rows[0].link;
	} catch (err) {
		if (err.code === 'PT429')
			return sendJson(res, 429, { error: 'Too many login attempts from here; wait a few minutes.' });
		throw err;
	}
	const qr = await QRCode.toString(link.whatsapp_link, { type: 'svg', errorCorrectionLevel: 'M', margin: 2, color: { dark: '#111111', light: '#ffffff' } });
	const draft = new URL(link.whatsapp_link).searchParams.get('text');
	const age = LINK_TTL + 3600; /* the link's life, then time to open the {link} (otp_link.token_ttl: 10 min by default) */
	/* at most MAX_LOGINS per browser: drop the oldest (a browser sends same-path cookies oldest first) */
	const older = Object.keys(parseCookies(req)).filter((n) => n.startsWith(COOKIE.login));
	sendJson(res, 200, {
		login: key,
		whatsapp_link: link.whatsapp_link,
		qr: `data:image/svg+xml;base64,${Buffer.from(qr).toString('base64')}`,
		expires_at: link.expires_at,
		draft: DEV ? draft : undefined,
	}, {
		'Set-Cookie': [
			...older.slice(0, Math.max(0, older.length - (MAX_LOGINS - 1))).map(clearCookie),
			cookie(COOKIE.login + key, `${link.uuid}.${binding}`, { maxAge: age }),
		],
	});
}

async function loginStatus(req, res, url) {
	const login = pendingLogin(req, url.searchParams.get('login'));
	if (!login)
		return sendJson(res, 404, { status: 'none' });
	const { uuid } = login;
	let s;
	try {
		s = (await pool.query('SELECT otp_link.otp_link_status($1) AS s', [uuid])).rows[0].s;
	} catch (err) {
		if (err.code === 'PT404')
			return sendJson(res, 404, { status: 'none' });
		throw err;
	}
	if (!s.metadata || s.metadata.purpose !== PURPOSE)
		return sendJson(res, 404, { status: 'none' });
	/*
	 * Not the verified number itself, only its masked form: enough for the
	 * user to notice that a number not theirs answered (someone else sent
	 * the code first), too little to tell a phisher whom they reached.
	 */
	sendJson(res, 200, {
		status: s.status, expires_at: s.expires_at, redeemed: s.redeemed,
		phone_masked: s.status === 'verified' ? maskedPhone(digitsOf(s.verified_chat_id)) : undefined,
	});
}

async function completeLogin(req, res, url) {
	const token = url.searchParams.get('token');
	if (!token) {
		const [st, html] = errorPage(400, { code: 'no_token', text: 'No login link' }, 'The address has no login token.');
		return send(res, st, 'text/html; charset=utf-8', html);
	}
	/* the binding of the login this link names (?login=), if this browser started it */
	const key = url.searchParams.get('login');
	const login = pendingLogin(req, key);
	const binding = login ? login.binding : null;
	/*
	 * Only a link of our instance, made for a login, with a binding: a token
	 * of another application's flow in the same database (another instance,
	 * a newsletter opt-in, an unbound link) is invalid_token here and stays
	 * usable where it belongs.
	 */
	/* a token is base64url: anything else is unknown, without asking the database */
	const result = !TOKEN_RE.test(token) ? { result: 'invalid_token' } : (await pool.query(
		`SELECT otp_link.otp_link_redeem(token => $1, instance => $2, binding => $3,
			require_binding => true, purpose => $4) AS r`,
		[token, instanceId, binding, PURPOSE])).rows[0].r;
	console.log(`redeem: ${result.result}`);
	if (result.result === 'redeemed') {
		const sid = crypto.randomBytes(32).toString('base64url');
		sessions.set(sid, {
			created: Date.now(),
			phone: result.phone,
			chatId: result.chat_id,
			uuid: result.uuid,
			verifiedAt: result.verified_at,
		});
		return redirect(res, sameSiteUrl(result.metadata && result.metadata.return_to), {
			'Set-Cookie': [
				cookie(COOKIE.sid, sid, { maxAge: SESSION_TTL_MS / 1000 }),
				clearCookie(COOKIE.login + key),
			],
		});
	}
	const [st, title, text] = REDEEM_PROBLEMS[result.result] || [400, 'Login failed', 'The login link could not be used.'];
	const [status, html] = errorPage(st, { code: result.result, text: title }, text);
	send(res, status, 'text/html; charset=utf-8', html);
}

/* dev only: the user's phone sends a WhatsApp message to the instance */
async function devSend(req, res) {
	if (!sameOrigin(req))
		return sendJson(res, 403, { error: 'cross-origin request refused' });
	const body = await readJson(req);
	const from = digitsOf(body.from);
	if (!from)
		return sendJson(res, 400, { error: 'Your number must have 8 to 15 digits.' });
	const text = typeof body.text === 'string' ? body.text.slice(0, 4096) : '';
	const messageId = `sim.${crypto.randomBytes(12).toString('hex')}`;
	/* what a provider webhook handler does: store the message; the trigger consumes it */
	await pool.query(`INSERT INTO ${INBOX_TABLE} (chat_id, body, message_id) VALUES ($1, $2, $3)`,
		[`${from}@c.us`, text, messageId]);
	const r = await pool.query('SELECT outcome FROM otp_link.messages_seen WHERE message_id = $1', [messageId]);
	sendJson(res, 200, { message_id: messageId, outcome: r.rows[0] ? r.rows[0].outcome : 'ignored' });
}

/*
 * dev only: the provider delivers the replies otp_link holds for that phone
 * (status 'held': the instance has no reply_endpoint, the application sends
 * them itself) and marks them delivered.
 */
async function devMessages(req, res, url) {
	const to = digitsOf(url.searchParams.get('phone'));
	if (!to)
		return sendJson(res, 400, { error: 'Your number must have 8 to 15 digits.' });
	const r = await pool.query(
		`WITH sent AS (
			UPDATE otp_link.deliveries SET status = 'delivered', delivered_at = now(), updated_at = now()
			 WHERE kind = 'reply' AND destination = $1 AND status = 'held'
			RETURNING id)
		 SELECT d.id, d.event, d.payload->>'body' AS body, d.created_at
		   FROM otp_link.deliveries d
		  WHERE d.kind = 'reply' AND d.destination = $1
		    AND d.created_at > now() - interval '1 hour'
		  ORDER BY d.id DESC LIMIT 5`,
		[to]);
	sendJson(res, 200, { messages: r.rows.reverse() });
}

const STATIC = {
	'/static/app.js': ['application/javascript; charset=utf-8', 'app.js'],
	'/static/style.css': ['text/css; charset=utf-8', 'style.css'],
};
const staticCache = new Map();

function serveStatic(res, pathname) {
	const [type, file] = STATIC[pathname];
	if (!staticCache.has(file))
		staticCache.set(file, fs.readFileSync(path.join(__dirname, 'public', file)));
	const body = staticCache.get(file);
	res.writeHead(200, { ...BASE_HEADERS, 'Content-Type': type, 'Content-Length': body.length });
	res.end(body);
}

/*
 * The request target as a URL of PUBLIC_ORIGIN, or null: only the
 * origin-form ("/path?query") is served, read as a path even when it starts
 * with "//" (which new URL(target, base) would take for a host).
 */
function requestUrl(req) {
	if (typeof req.url !== 'string' || !req.url.startsWith('/'))
		return null;
	try {
		return new URL(PUBLIC_ORIGIN + req.url);
	} catch {
		return null;
	}
}

/* headers a reverse proxy, tunnel or CDN adds: their presence means the request did not come from this machine */
const PROXY_HEADERS = ['x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'forwarded', 'x-real-ip',
	'via', 'cf-connecting-ip', 'true-client-ip', 'x-client-ip'];

/*
 * OTP_LINK_DEV=1 (the simulated phone lets anyone log in as anyone): only
 * a request from this machine, not through a proxy or tunnel, for the
 * loopback PUBLIC_URL's host.  The socket peer must be a loopback address,
 * no proxy header may be present, and Host must be PUBLIC_URL's host:port
 * (which also stops DNS rebinding).  A proxy that adds none of these
 * headers and passes Host on unchanged cannot be told apart: never put one
 * in front of a development server.
 */
function devRequestAllowed(req) {
	const peer = (req.socket.remoteAddress || '').replace(/^::ffff:/i, '');
	const loopbackPeer = peer === '::1' || (net.isIPv4(peer) && peer.startsWith('127.'));
	const proxied = PROXY_HEADERS.some((h) => req.headers[h] !== undefined);
	const host = String(req.headers.host || '').toLowerCase();
	if (loopbackPeer && !proxied && host === PUBLIC.host)
		return true;
	warnEvery('dev-refused', `OTP_LINK_DEV=1: refused a request from ${req.socket.remoteAddress} for Host ${JSON.stringify(req.headers.host ?? null)}${proxied ? ' through a proxy' : ''}: the simulated phone answers only a browser on this machine at ${PUBLIC_ORIGIN}/`);
	return false;
}

async function route(req, res) {
	if (TRUST_PROXY === null && req.headers['x-forwarded-for'] !== undefined)
		warnOnce('xff', 'WARNING: requests carry X-Forwarded-For but TRUST_PROXY is not set: every client shares the rate limit of the proxy. Set TRUST_PROXY to the number of proxies in front of this server.');
	if (DEV && !devRequestAllowed(req))
		return send(res, 403, 'text/plain; charset=utf-8', `OTP_LINK_DEV=1: this server answers only a browser on this machine at ${PUBLIC_ORIGIN}/ (no proxy, no tunnel, no other host name)\n`);
	const url = requestUrl(req);
	if (!url)
		return send(res, 400, 'text/plain; charset=utf-8', 'bad request target\n');
	const key = `${req.method} ${url.pathname}`;
	switch (key) {
		case 'GET /':
			return send(res, 200, 'text/html; charset=utf-8', homePage(session(req)));
		case 'POST /login/start':
			return startLogin(req, res);
		case 'GET /login/status':
			return loginStatus(req, res, url);
		case 'GET /login/complete':
			return completeLogin(req, res, url);
		case 'POST /logout': {
			if (!sameOrigin(req))
				return sendJson(res, 403, { error: 'cross-origin request refused' });
			const sid = parseCookies(req)[COOKIE.sid];
			if (sid)
				sessions.delete(sid);
			return redirect(res, `${PUBLIC_ORIGIN}/`, { 'Set-Cookie': clearCookie(COOKIE.sid) });
		}
		case 'GET /healthz':
			await pool.query('SELECT 1');
			return sendJson(res, 200, { ok: true });
		case 'POST /dev/whatsapp/send':
			if (DEV)
				return devSend(req, res);
			break;
		case 'GET /dev/whatsapp/messages':
			if (DEV)
				return devMessages(req, res, url);
			break;
		default:
			if (req.method === 'GET' && STATIC[url.pathname])
				return serveStatic(res, url.pathname);
	}
	send(res, 404, 'text/plain; charset=utf-8', 'not found\n');
}

/* ---------------------------------------------------------------- start */

async function findInstance() {
	if (process.env.OTP_LINK_INSTANCE) {
		if (!UUID_RE.test(process.env.OTP_LINK_INSTANCE))
			throw new Error(`OTP_LINK_INSTANCE ${JSON.stringify(process.env.OTP_LINK_INSTANCE)} is not a uuid`);
		return process.env.OTP_LINK_INSTANCE;
	}
	const digits = digitsOf(WHATSAPP_NUMBER);
	if (!digits)
		throw new Error(`WHATSAPP_NUMBER ${JSON.stringify(WHATSAPP_NUMBER)} is not a phone number`);
	const found = await pool.query('SELECT id::text FROM otp_link.instances WHERE phone = $1', [digits]);
	if (found.rows.length)
		return found.rows[0].id;
	const r = await pool.query(
		'SELECT otp_link.otp_link_instance_create(phone => $1, name => $2) AS i', [WHATSAPP_NUMBER, APP_NAME]);
	return r.rows[0].i.uuid;
}

/* behind a proxy without TRUST_PROXY, all clients share one rate limit: say so, loudly */
function warnProxy() {
	if (TRUST_PROXY !== null || isLoopback(PUBLIC.hostname))
		return;
	console.error(`
WARNING: PUBLIC_URL is ${PUBLIC_ORIGIN} but this server listens on ${HOST}, so a reverse proxy
WARNING: forwards the requests, and TRUST_PROXY is not set: every client gets the proxy's
WARNING: address, shares ONE rate limit, and ten requests lock everyone out.
WARNING: Set TRUST_PROXY to the number of proxies that append to X-Forwarded-For (1 for one
WARNING: nginx), or TRUST_PROXY=0 if there really is no proxy.
`);
}

async function main() {
	warnProxy();
	instanceId = await findInstance();
	if (DEV)
		await pool.query(`SELECT 1 FROM ${INBOX_TABLE} LIMIT 0`);	/* fail early without the inbox */
	const server = http.createServer((req, res) => {
		route(req, res).catch((err) => {
			console.error(`${req.method} ${req.url.split('?')[0]}: ${err.message}`);
			if (!res.headersSent)
				sendJson(res, err.status || 500, { error: err.status ? err.message : 'internal error' });
			else
				res.destroy();
		});
	});
	server.requestTimeout = 15000;
	server.headersTimeout = 10000;
	server.keepAliveTimeout = 2000;
	server.listen(PORT, HOST, () => {
		console.log(`otp_link login example listening on ${HOST}:${PORT} for ${PUBLIC_URL}/ (instance ${instanceId}, WhatsApp number ${WHATSAPP_NUMBER}, TRUST_PROXY ${TRUST_PROXY ?? 'unset'}${DEV ? ', simulated phone ON' : ''})`);
	});
	const stop = () => {
		server.close();
		server.closeAllConnections();
		pool.end().finally(() => process.exit(0));
		setTimeout(() => process.exit(0), 3000).unref();
	};
	process.on('SIGTERM', stop);
	process.on('SIGINT', stop);
}

main().catch((err) => {
	console.error(`otp_link login example: ${err.message}`);
	process.exit(1);
});
