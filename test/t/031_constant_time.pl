# Copyright: otp_link developers
#
# 031_constant_time.pl: otp_timingsafe_equal(), which compares token and
# signature digests, runs in constant time.  test/ct/ct_check.c is linked
# with src/code.o, the object that goes into otp_link.so (its other
# functions are replaced by stubs that abort), and run under Valgrind's
# memcheck with the compared bytes marked undefined: any branch or memory
# address that depends on them is reported.  The same check on memcmp()
# must report something, which shows the check can fail.

use strict;
use warnings;
use FindBin;
use PostgreSQL::Test::Utils;
use Test::More;

my $top = "$FindBin::RealBin/../..";
my $obj = "$top/src/code.o";
# scripts/test builds and installs valgrind; a bare "make installcheck" may not
plan skip_all => 'src/code.o is not built (run make)' unless -f $obj;
plan skip_all => 'valgrind is not installed (scripts/setup valgrind)'
  unless system('valgrind --version >/dev/null 2>&1') == 0;

my $dir = PostgreSQL::Test::Utils::tempdir();

# stubs for what code.o needs from the server and libc does not provide
my $libc = `gcc -print-file-name=libc.so.6`;
chomp $libc;
my %libc = map { (split /\s+/)[2] =~ s/@.*//r => 1 }
  grep { /\s[TWiV]\s/ } split /\n/, `nm -D --defined-only $libc`;
my @undef = grep { !$libc{$_} } map { (split)[1] } grep { /\sU\s/ } split /\n/, `nm -u $obj`;
ok(scalar(grep { $_ eq 'pg_strong_random' } @undef), 'the server symbols are stubbed, e.g. pg_strong_random');
open(my $fh, '>', "$dir/stubs.c") or die $!;
print $fh "#include <stdlib.h>\n";
print $fh "void $_(void);\nvoid $_(void) { abort(); }\n" for @undef;
close $fh;

my $bin = "$dir/ct_check";
my ($out, $err) = ('', '');
my $built = IPC::Run::run(
	[ 'gcc', '-O2', '-Wall', '-o', $bin, "$top/test/ct/ct_check.c", "$dir/stubs.c", $obj ],
	'>', \$out, '2>', \$err);
ok($built, 'ct_check links with src/code.o') or diag($err);

for my $mode ('safe', 'leaky')
{
	($out, $err) = ('', '');
	IPC::Run::run([ 'valgrind', '--error-exitcode=99', $bin, $mode ], '>', \$out, '2>', \$err);
	my $rc = $? >> 8;
	my ($errors) = $err =~ /ERROR SUMMARY: (\d+) errors/;
	ok(defined $errors, "$mode: memcheck ran and reported") or diag($err);
	like($out, qr/^$mode: 0 wrong answers$/m, "$mode: right answers");
	if ($mode eq 'safe')
	{
		is($errors, 0, 'otp_timingsafe_equal: no branch or address depends on the compared bytes')
		  or diag($err);
		is($rc, 0, 'ct_check safe exits 0 under memcheck');
	}
	else
	{
		cmp_ok($errors // 0, '>', 0, 'memcmp: memcheck sees branches on the compared bytes (the check can fail)');
		is($rc, 99, 'ct_check leaky fails under memcheck');
	}
}

done_testing();
