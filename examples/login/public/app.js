'use strict';
/* examples/login/public/app.js: the login page's behaviour (no framework). */
(function () {
	const $ = (id) => document.getElementById(id);
	const dev = document.body.dataset.dev === '1';
	const POLL_MS = 1500;
	const MAX_POLLS = 1200;		/* 30 minutes at most, whatever the expiry */
	const MAX_ERRORS = 10;

	let pollTimer = null;
	let phoneTimer = null;
	let polls = 0;
	let errors = 0;
	let expiresAt = 0;
	let login = null;	/* this tab's login in progress (the server keeps one cookie per login) */
	let sent = false;

	if (!$('start'))
		return;		/* logged in, or an error page */

	function show(id, on) {
		$(id).hidden = !on;
	}

	function setStatus(cls, text) {
		const el = $('status');
		el.className = `status ${cls}`;
		el.textContent = text;
	}

	function fail(text) {
		$('error').textContent = text;
		show('error', true);
	}

	function stopTimers() {
		clearTimeout(pollTimer);
		clearTimeout(phoneTimer);
		pollTimer = phoneTimer = null;
	}

	async function start() {
		stopTimers();
		show('error', false);
		$('start').disabled = true;
		try {
			/* where to land once logged in (the server keeps only paths of this site) */
			const returnTo = new URLSearchParams(location.search).get('return_to');
			const r = await fetch('/login/start', {
				method: 'POST',
				headers: { 'Content-Type': 'application/json' },
				body: JSON.stringify(returnTo ? { return_to: returnTo } : {}),
			});
			const j = await r.json();
			if (!r.ok)
				throw new Error(j.error || `HTTP ${r.status}`);
			login = j.login;
			$('qr').src = j.qr;
			$('wa-link').href = j.whatsapp_link;
			$('wa-link').dataset.link = j.whatsapp_link;
			expiresAt = Date.parse(j.expires_at);
			$('expires').textContent = `The request expires at ${new Date(expiresAt).toLocaleTimeString()}.`;
			setStatus('pending', 'Waiting for your WhatsApp message…');
			show('expires', true);
			show('step-start', false);
			show('step-link', true);
			polls = errors = 0;
			if (dev)
				phoneReady(j.draft);
			poll();
		} catch (e) {
			fail(`Could not start the login: ${e.message}`);
		} finally {
			$('start').disabled = false;
		}
	}

	async function poll() {
		pollTimer = null;
		if (++polls > MAX_POLLS || Date.now() > expiresAt + 5000)
			return setStatus('bad', 'This request has expired. Start over to get a new one.');
		try {
			const r = await fetch(`/login/status?login=${encodeURIComponent(login)}`, { cache: 'no-store' });
			const j = await r.json();
			errors = 0;
			if (j.status === 'verified') {
				/* the masked number: a user whose code someone else sent first sees a number not theirs */
				const who = j.phone_masked || 'unknown';
				setStatus('ok', j.redeemed ?
					`✓ Number ${who} verified, and the login link has been used.` :
					`✓ Number ${who} verified. WhatsApp has sent that number a login link: open it in this browser to continue. Not your number? Do not open any link; start over.`);
				$('login').classList.add('verified');
				show('expires', false);
				return;
			}
			if (j.status === 'expired')
				return setStatus('bad', 'This request has expired. Start over to get a new one.');
			if (j.status === 'failed')
				return setStatus('bad', 'The login failed. Start over to try again.');
			if (j.status === 'none')
				return setStatus('bad', 'This browser has no login in progress. Start over.');
		} catch (e) {
			if (++errors >= MAX_ERRORS)
				return setStatus('bad', 'Lost contact with the server. Reload the page.');
		}
		pollTimer = setTimeout(poll, POLL_MS);
	}

	/* ---------------- the simulated phone (development only) ---------------- */

	function bubble(cls, text, linkify) {
		show('chat-empty', false);
		const b = document.createElement('div');
		b.className = `bubble ${cls}`;
		const urlRe = /(https?:\/\/[^\s]+)/g;
		let last = 0;
		let m;
		while (linkify && (m = urlRe.exec(text)) !== null) {
			b.append(text.slice(last, m.index));
			const a = document.createElement('a');
			a.href = m[1];
			a.textContent = m[1];
			a.className = 'login-url';
			b.append(a);
			last = m.index + m[1].length;
		}
		b.append(text.slice(last));
		$('chat').append(b);
		$('chat').scrollTop = $('chat').scrollHeight;
		return b;
	}

	function phoneReady(draft) {
		sent = false;
		$('chat').querySelectorAll('.bubble').forEach((b) => b.remove());
		show('chat-empty', true);
		$('draft').value = draft || '';
		$('draft').disabled = false;
		$('send').disabled = false;
	}

	async function phoneSend() {
		if (sent)
			return;
		const text = $('draft').value;
		$('send').disabled = true;
		try {
			const r = await fetch('/dev/whatsapp/send', {
				method: 'POST',
				headers: { 'Content-Type': 'application/json' },
				body: JSON.stringify({ from: $('phone-from').value, text }),
			});
			const j = await r.json();
			if (!r.ok)
				throw new Error(j.error || `HTTP ${r.status}`);
			sent = true;
			$('draft').value = '';
			$('draft').disabled = true;
			bubble('out', text, false).dataset.outcome = j.outcome;
			phonePoll(0);
		} catch (e) {
			$('send').disabled = false;
			fail(`The simulated phone could not send: ${e.message}`);
		}
	}

	/* the provider hands otp_link's held reply to the phone */
	async function phonePoll(n) {
		phoneTimer = null;
		try {
			const r = await fetch(`/dev/whatsapp/messages?phone=${encodeURIComponent($('phone-from').value)}`, { cache: 'no-store' });
			const j = await r.json();
			const reply = r.ok && j.messages.filter((m) => !$('chat').querySelector(`[data-id="${m.id}"]`)).pop();
			if (reply) {
				const b = bubble('in', reply.body, true);
				b.dataset.id = reply.id;
				const url = b.querySelector('a.login-url');
				if (url) {
					const go = document.createElement('a');
					go.href = url.href;
					go.id = 'continue';
					go.className = 'continue';
					go.textContent = 'Continue';
					b.append(go);
				}
				return;
			}
		} catch (e) {
			/* retried below */
		}
		if (n < 20)
			phoneTimer = setTimeout(() => phonePoll(n + 1), 500);
	}

	$('start').addEventListener('click', start);
	$('restart').addEventListener('click', start);
	if (dev) {
		$('send').addEventListener('click', phoneSend);
		$('draft').addEventListener('keydown', (e) => {
			if (e.key === 'Enter' && !e.shiftKey) {
				e.preventDefault();
				phoneSend();
			}
		});
	}
}());
