-- pgbench script: one otp_link_generate call for instance :inst (-M prepared)
SELECT otp_link.otp_link_generate(instance => :inst, expires => 1800, name => 'Bench',
	message => '{"prompt": "Give me link to login at {name}", "success": "Here is your login link: {link}", "failed": "Login failed, please try again later.", "expired": "The link has been expired, please try another one."}',
	callback => :callback, link_url => 'https://app.example/login?token={token}');
