# Signed tracking URLs (tracker_secret, tracker_signed, tracker_signed_dimensions), with an
# nginx of our own and URLs made by `tracker-shipper sign-url`:
# - `on`: a signed click redirects; a tampered campaign, dimension, expiry or signature, a
#   missing or expired signature, an unknown key: 403 and no event (counted as rejected);
#   a pixel with a bad signature gets the GIF and no event;
# - `flag`: the event is stored with the `unsigned` flag; a valid signature: no flag;
# - rotation: a URL signed before a new key was added (with the older key) is accepted;
# - values are compared after percent-decoding; unsigned arguments (`t`) may change freely;
# - `nginx -t` names the key file and line of a bad key file, and refuses `tracker_signed`
#   without `tracker_secret` or with a signed dimension that is not a dimension.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use MIME::Base64 qw(encode_base64);

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $SHIPPER = $ENV{TEST_NGINX_SHIPPER};

sub key_b64 { my $k = encode_base64(join('', map { chr int rand 256 } 1 .. ($_[0] || 32)), ''); return $k }

my ($old, $new, $gone) = (key_b64(32), key_b64(48), key_b64(32));
write_file("$WORK/keys-v1", "# before the rotation\nold $old\n");
write_file("$WORK/keys-v2", "# after the rotation: new signs, old still accepted\nold $old\n\nnew $new\n");
write_file("$WORK/keys-gone", "gone $gone\n");

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/summer?pub={dim.publisher}' },
    { id => 'winter', status => 'active', landing_url => 'https://shop.example.com/winter?pub={dim.publisher}' },
]);

# sign-url: (url, exit code, output)
sub sign {
    my (%o) = @_;
    my @cmd = ($SHIPPER, 'sign-url', '--secret', $o{secret} || "$WORK/keys-v2", '--campaign', $o{campaign},
               '--base', $o{base});
    push @cmd, defined $o{expires_at} ? ('--expires-at', $o{expires_at}) : ('--expires-in', $o{expires_in} // 3600);
    push @cmd, '--dim', $_ for @{ $o{dims} || [] };
    push @cmd, '--kid', $o{kid} if $o{kid};
    my ($rc, $out) = TrackerTest::run_cmd(@cmd);
    chomp $out;
    return wantarray ? ($out, $rc) : $out;
}

my $ngx = TrackerTest::Nginx->new(http => <<'HTTP');
    tracker_ring      @RING@ 1m;
    tracker_campaigns @CAMPAIGNS@ zone=signed:1m;
    tracker_secret    @WORK@/keys-v2;
    server {
        listen @LISTEN@;
        tracker_dimension t         $arg_t;
        tracker_dimension publisher $arg_pub;
        tracker_signed_dimensions publisher;
        location = /c    { tracker click;      tracker_signed on; }
        location = /i    { tracker impression; tracker_signed on; }
        location = /fc   { tracker click;      tracker_signed flag; }
        location = /open { tracker click; }
        location = /cid  { tracker click;      tracker_signed on; tracker_signed_dimensions t; }
    }
HTTP
my ($rc, $out) = $ngx->test_conf;
is($rc, 0, 'nginx -t accepts the configuration') or diag $out;
$ngx->start;

my (%want_stored, %want_absent);
sub req {
    my ($name, $uri, $status, %o) = @_;
    my $r = $ngx->get($uri);
    is($r->{status}, $status, "$name: $status") or diag "$uri\n$r->{raw_headers}";
    if ($status == 302) {
        like($r->{headers}{location} // '', qr{^https://shop\.example\.com/}, "$name: to the landing URL");
    }
    return $r;
}

my $good = sign(campaign => 'summer', dims => ['publisher=news'], base => '/c?cid=summer&pub=news&t=ok');
like($good, qr{^/c\?cid=summer&pub=news&t=ok&exp=\d+&kid=new&sig=[A-Za-z0-9_-]{43}$}, 'sign-url appends exp, kid (the newest key) and sig');
req('valid signature', $good, 302);
$want_stored{ok} = [];

# The unsigned `t` may change: it is not a signed dimension.
(my $retag = $good) =~ s/t=ok/t=retag/;
req('unsigned argument changed', $retag, 302);
$want_stored{retag} = [];

# Tampering.
(my $t_cid = $good) =~ s/cid=summer/cid=winter/;
(my $t_dim = $good) =~ s/pub=news/pub=evil/;
$t_dim =~ s/t=ok/t=t-dim/;
$t_cid =~ s/t=ok/t=t-cid/;
my ($exp) = $good =~ /exp=(\d+)/;
(my $t_exp = $good) =~ s/exp=\d+/'exp=' . ($exp + 100)/e;
$t_exp =~ s/t=ok/t=t-exp/;
(my $t_sig = $good) =~ s/sig=(.)/'sig=' . ($1 eq 'A' ? 'B' : 'A')/e;
$t_sig =~ s/t=ok/t=t-sig/;
(my $t_short = $good) =~ s/(sig=.{20}).*/$1/;
$t_short =~ s/t=ok/t=t-short/;
(my $t_nosig = $good) =~ s/&sig=.*//;
$t_nosig =~ s/t=ok/t=t-nosig/;
(my $t_kid = $good) =~ s/kid=new/kid=old/;
$t_kid =~ s/t=ok/t=t-kid/;
my $r = req('tampered campaign', $t_cid, 403);
unlike($r->{headers}{location} // '', qr/./, 'no Location on a 403');
req('tampered dimension', $t_dim, 403);
req('tampered expiry', $t_exp, 403);
req('tampered signature', $t_sig, 403);
req('truncated signature', $t_short, 403);
req('missing signature', $t_nosig, 403);
req('another listed key named', $t_kid, 403);
req('no signature at all', '/c?cid=summer&pub=news&t=t-none', 403);
req('garbage signature', '/c?cid=summer&pub=news&t=t-garbage&exp=99999999999&kid=new&sig=%00%0d%0a%ff' . ('=' x 50), 403);
my $expired = sign(campaign => 'summer', dims => ['publisher=news'], base => '/c?cid=summer&pub=news&t=t-expired',
                   expires_at => time - 10);
req('expired', $expired, 403);
my $unknown = sign(secret => "$WORK/keys-gone", campaign => 'summer', dims => ['publisher=news'],
                   base => '/c?cid=summer&pub=news&t=t-unknown-key');
req('a key that is not listed', $unknown, 403);
$want_absent{$_} = 1 for qw(t-cid t-dim t-exp t-sig t-short t-nosig t-kid t-none t-garbage t-expired t-unknown-key);

# Rotation: signed with keys-v1 (where "old" is the newest), served with keys-v2.
my $rot = sign(secret => "$WORK/keys-v1", campaign => 'summer', dims => ['publisher=news'], base => '/c?cid=summer&pub=news&t=rotated');
like($rot, qr/kid=old&/, 'keys-v1 signs with "old"');
req('signed with the older, still listed key', $rot, 302);
$want_stored{rotated} = [];
my $oldkid = sign(campaign => 'summer', dims => ['publisher=news'], kid => 'old', base => '/c?cid=summer&pub=news&t=kid-old');
req('sign-url --kid old', $oldkid, 302);
$want_stored{'kid-old'} = [];

# Percent-decoded values are signed.
my $enc = sign(campaign => 'summer', dims => ['publisher=a b/c&d'], base => '/c?cid=summer&pub=a+b%2Fc%26d&t=encoded');
req('percent-encoded dimension', $enc, 302);
$want_stored{encoded} = [];

# A signed dimension that is the tag itself (location /cid signs `t`).
my $tsig = sign(campaign => 'winter', dims => ['t=tag-signed'], base => '/cid?cid=winter&t=tag-signed');
req('another signed dimension', $tsig, 302);
$want_stored{'tag-signed'} = [];
(my $tsig2 = $tsig) =~ s/t=tag-signed/t=tag-forged/;
req('that dimension tampered', $tsig2, 403);
$want_absent{'tag-forged'} = 1;

# Pixels: the GIF either way; an event only with a valid signature.
my $pix = sign(campaign => 'summer', dims => ['publisher=news'], base => '/i?cid=summer&pub=news&t=pixel-ok');
$r = req('pixel, valid signature', $pix, 200);
is($r->{body}, gif_bytes(), 'pixel: the GIF');
$want_stored{'pixel-ok'} = [];
(my $pbad = $pix) =~ s/pub=news/pub=other/;
$pbad =~ s/t=pixel-ok/t=pixel-bad/;
$r = req('pixel, bad signature', $pbad, 200);
is($r->{body}, gif_bytes(), 'pixel with a bad signature: still the GIF');
$r = req('pixel, no signature', '/i?cid=summer&pub=news&t=pixel-none', 200);
is($r->{body}, gif_bytes(), 'pixel without a signature: still the GIF');
$want_absent{$_} = 1 for qw(pixel-bad pixel-none);

# flag: stored, flagged when the signature is not valid.
req('flag, no signature', '/fc?cid=summer&pub=news&t=flag-none', 302);
$want_stored{'flag-none'} = ['unsigned'];
my $fexp = sign(campaign => 'summer', dims => ['publisher=news'], base => '/fc?cid=summer&pub=news&t=flag-expired', expires_at => time - 1);
req('flag, expired', $fexp, 302);
$want_stored{'flag-expired'} = ['unsigned'];
my $fok = sign(campaign => 'summer', dims => ['publisher=news'], base => '/fc?cid=summer&pub=news&t=flag-ok');
req('flag, valid signature', $fok, 302);
$want_stored{'flag-ok'} = [];

# off (the default): no check, no flag.
req('off', '/open?cid=summer&pub=news&t=open', 302);
$want_stored{open} = [];

my $h = ring_header();
$ngx->stop;
my $events = drain();
for my $tag (sort keys %want_stored) {
    my $e = one_tagged($events, $tag);
    ok($e, "$tag stored") or next;
    is_deeply(flags_of($e), $want_stored{$tag}, "$tag flags");
}
for my $tag (sort keys %want_absent) {
    is(scalar @{ events_tagged($events, $tag) }, 0, "$tag not stored");
}
is(scalar(@$events), scalar(keys %want_stored), 'nothing else stored');
# rejected: the 12 refused clicks, 2 refused pixels
is($h->{rejected}[kind_index('click')], 12, '12 refused clicks counted as rejected');
is($h->{rejected}[kind_index('impression')], 2, '2 refused pixels counted as rejected');
unlike($ngx->error_log_text, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');

# sign-url errors.
my ($o2, $rc2) = sign(campaign => 'bad id!', base => '/c');
isnt($rc2, 0, 'sign-url refuses an invalid campaign id');
($o2, $rc2) = sign(campaign => 'summer', kid => 'nope', base => '/c');
isnt($rc2, 0, 'sign-url refuses an unknown --kid');
like($o2, qr/nope/, '... naming it');

# ---------------------------------------------------------------------------------------------
# nginx -t: bad key files and configurations.
sub conf_error {
    my ($name, $http, $want) = @_;
    my $n = TrackerTest::Nginx->new(http => $http);
    my ($rc, $out) = $n->test_conf;
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, $want, "$name: the message") or diag $out;
}

sub with_keys {
    my ($file, $extra) = @_;
    $extra //= '';
    return <<"HTTP";
    tracker_ring      \@WORK\@/t-ring 1m;
    tracker_secret    $file;
    server {
        listen \@LISTEN\@;
        tracker_dimension publisher \$arg_pub;
        location = /c { tracker click; tracker_signed on; $extra }
    }
HTTP
}

my $k32 = key_b64(32);
write_file("$WORK/bad-b64", "# keys\nfine $k32\nbroken not*base64!\n");
conf_error('bad base64', with_keys("$WORK/bad-b64"), qr/\[emerg\].*tracker_secret.*bad-b64:3: the key "broken" is not valid base64/);
write_file("$WORK/short", "\n# short\nshort " . key_b64(16) . "\n");
conf_error('short key', with_keys("$WORK/short"), qr/\[emerg\].*short:3: the key "short" has 16 bytes, at least 32 are needed/);
write_file("$WORK/dup", "a $k32\nb $k32\na $k32\n");
conf_error('duplicate name', with_keys("$WORK/dup"), qr/\[emerg\].*dup:3: duplicate key name "a" \(first on line 1\)/);
write_file("$WORK/empty", "# nothing\n\n");
conf_error('empty file', with_keys("$WORK/empty"), qr/\[emerg\].*empty: no key in the file/);
conf_error('missing file', with_keys("$WORK/absent"), qr/\[emerg\].*tracker_secret.*cannot read .*absent/);
write_file("$WORK/fields", "a $k32 extra\n");
conf_error('extra field', with_keys("$WORK/fields"), qr/\[emerg\].*fields:1: expected "NAME BASE64KEY"/);
conf_error('signed dimension that is not a dimension', with_keys("$WORK/keys-v2", 'tracker_signed_dimensions placement;'),
           qr/\[emerg\].*"tracker_signed_dimensions" names "placement", which is not a "tracker_dimension"/);
conf_error('bad tracker_signed value', <<"HTTP", qr/\[emerg\].*invalid value "maybe" in "tracker_signed" directive, it must be "on", "off" or "flag"/);
    tracker_ring \@WORK\@/t-ring 1m;
    tracker_secret $WORK/keys-v2;
    tracker_signed maybe;
HTTP
conf_error('tracker_signed without tracker_secret', <<'HTTP', qr/\[emerg\].*no "tracker_secret" is configured/);
    tracker_ring @WORK@/t-ring 1m;
    server {
        listen @LISTEN@;
        location = /c { tracker click; tracker_signed flag; }
    }
HTTP
conf_error('tracker_secret in a server', <<"HTTP", qr/\[emerg\].*"tracker_secret" directive is not allowed here/);
    tracker_ring \@WORK\@/t-ring 1m;
    server {
        listen \@LISTEN\@;
        tracker_secret $WORK/keys-v2;
    }
HTTP
conf_error('duplicate tracker_secret', <<"HTTP", qr/\[emerg\].*"tracker_secret" directive is duplicate/);
    tracker_ring \@WORK\@/t-ring 1m;
    tracker_secret $WORK/keys-v2;
    tracker_secret $WORK/keys-v1;
HTTP

# `tracker_signed off` needs no secret; tracker_secret may be given alone.
my $ok = TrackerTest::Nginx->new(http => <<'HTTP');
    tracker_ring @WORK@/t-ring 1m;
    server {
        listen @LISTEN@;
        location = /c { tracker click; tracker_signed off; tracker_signed_dimensions x; }
    }
HTTP
($rc, $out) = $ok->test_conf;
is($rc, 0, 'tracker_signed off needs neither a secret nor the signed dimensions') or diag $out;

done_testing();
