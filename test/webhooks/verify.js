// verify.js: check otp_link callbacks with the Standard Webhooks reference
// library, as a receiver would.  Reads JSON lines from stdin, each
// {"secret": "whsec_...", "headers": {...}, "body": "..."}, and prints one
// line per input: "ok" or "fail: <reason>".
'use strict';
const { Webhook } = require('standardwebhooks');
const readline = require('readline');

const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
	if (!line.trim())
		return;
	const req = JSON.parse(line);
	try {
		// the library takes the secret without its whsec_ prefix
		const wh = new Webhook(req.secret.replace(/^whsec_/, ''));
		wh.verify(req.body, req.headers);
		console.log('ok');
	} catch (e) {
		console.log('fail: ' + e.message);
	}
});
