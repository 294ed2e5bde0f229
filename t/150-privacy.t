# Privacy: `tracker_ip hash` (a keyed hash, equal within a day across workers and reloads,
# never the address), DNT: 1 / Sec-GPC: 1 (the event is kept and billed, without ip, ua and
# personal dimensions, flagged dnt), `tracker_respect_dnt off`, `tracker_dimension ... personal`,
# and the directives' errors.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;

write_campaigns([
    { id => 'paid', status => 'active', landing_url => 'https://shop.example.com/l?e={dim.email}&p={dim.publisher}',
      price_per_click => 0.5 },
    { id => 'free', status => 'active', landing_url => 'https://shop.example.com/f' },
]);

# A self-signed certificate for the https server (the cookie's Secure attribute).
my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $TLS_PORT = free_port();
system("openssl req -x509 -newkey rsa:2048 -nodes -keyout '$WORK/tls.key' -out '$WORK/tls.crt' -days 2 -subj /CN=localhost 2>/dev/null") == 0
    or die "openssl could not make a certificate\n";

my $ngx = TrackerTest::Nginx->new(workers => 2, log_level => 'warn', http => <<"HTTP" . <<'HTTP');
    server {
        listen 127.0.0.1:$TLS_PORT ssl;
        ssl_certificate     $WORK/tls.crt;
        ssl_certificate_key $WORK/tls.key;
        tracker_dimension t \$arg_t;
        location = /u { tracker impression; tracker_userid on; }
    }
HTTP
    tracker_ring      @RING@ 4m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    server {
        listen @LISTEN@ reuseport;
        set_real_ip_from 127.0.0.1;
        real_ip_header   X-Forwarded-For;
        tracker_dimension t         $arg_t;
        tracker_dimension publisher $arg_pub;
        tracker_dimension email     $arg_email personal;
        location = /h     {
            tracker impression;
            tracker_ip hash;
            tracker_dimension t      $arg_t;
            tracker_dimension worker $pid;
        }
        location = /i     { tracker impression; tracker_ip full; }
        location = /c     { tracker click; tracker_ip full; }
        location = /nodnt { tracker impression; tracker_ip full; tracker_respect_dnt off; }
        location = /u     { tracker impression; tracker_userid on; }
        location = /u2    {
            tracker impression;
            tracker_userid on;
            tracker_userid_name    vid;
            tracker_userid_domain  example.com;
            tracker_userid_path    /t;
            tracker_userid_expires 1d;
        }
    }
HTTP
$ngx->start;

my %ua = ('User-Agent' => 'privacy-test/1.0');
sub get { my ($uri, %h) = @_; return $ngx->get($uri, headers => { %ua, %h }) }

# --- hash ------------------------------------------------------------------------------------
for my $n (1 .. 16) {    # fresh connections: both workers answer some (reuseport)
    is(get("/h?cid=free&t=hash-a$n")->{status}, 200, "hash request $n");
}
get("/h?cid=free&t=hash-b", 'X-Forwarded-For' => '192.0.2.77');
get("/h?cid=free&t=hash-b2", 'X-Forwarded-For' => '192.0.2.77');
get("/h?cid=free&t=hash-v6", 'X-Forwarded-For' => '2001:db8::5');

# --- DNT / GPC -------------------------------------------------------------------------------
get("/i?cid=free&t=plain&pub=news&email=a%40b.example");
get("/i?cid=free&t=dnt&pub=news&email=a%40b.example", DNT => '1');
get("/i?cid=free&t=gpc&pub=news&email=a%40b.example", 'Sec-GPC' => '1');
get("/i?cid=free&t=dnt0&pub=news&email=a%40b.example", DNT => '0');
get("/h?cid=free&t=dnt-hash", DNT => '1');
my $click = get("/c?cid=paid&t=dnt-click&pub=news&email=a%40b.example", DNT => '1');
is($click->{status}, 302, 'a DNT click is redirected');
is($click->{headers}{location}, 'https://shop.example.com/l?e=&p=news',
   'the personal dimension is not passed to the landing URL either');
my $click2 = get("/c?cid=paid&t=click&pub=news&email=x");
is($click2->{headers}{location}, 'https://shop.example.com/l?e=x&p=news', 'without DNT it is');
get("/nodnt?cid=free&t=nodnt&pub=news&email=a%40b.example", DNT => '1', 'Sec-GPC' => '1');

# --- the visitor id cookie --------------------------------------------------------------------
my $u1 = get("/u?cid=free&t=uid-new");
my $sc = $u1->{headers}{'set-cookie'} // '';
my ($uid) = $sc =~ /^tid=([0-9a-f]{32});/;
my $u2 = get("/u?cid=free&t=uid-back", Cookie => "other=1; tid=$uid");
my $u3 = get("/u?cid=free&t=uid-bad", Cookie => 'tid=not-an-id');
my $u4 = get("/u?cid=free&t=uid-dnt", Cookie => "tid=$uid", DNT => '1');
my $u5 = get("/u?cid=free&t=uid-gpc", 'Sec-GPC' => '1');
my $u6 = get("/u2?cid=free&t=uid-attrs");
my $u7 = get("/i?cid=free&t=uid-off", Cookie => "tid=$uid");
my $tls = `curl -sk -o /dev/null -D - 'https://127.0.0.1:$TLS_PORT/u?cid=free&t=uid-https' 2>&1`;

# --- reload keeps the secret -----------------------------------------------------------------
my @before = @{ $ngx->worker_pids };
$ngx->reload;
wait_until(10, sub {
    my %old = map { $_ => 1 } @before;
    my $w = $ngx->worker_pids;
    @$w == 2 && !grep { $old{$_} } @$w;
}) or diag('workers were not replaced by the reload');
get("/h?cid=free&t=hash-reload");

my $events = drain();

subtest 'tracker_ip hash: h: + 32 hex, stable within the day, across workers and a reload' => sub {
    my @a = map { one_tagged($events, "hash-a$_") } 1 .. 16;
    is(scalar(grep { defined } @a), 16, 'sixteen events') or return;
    my %workers = map { (dim($_, 'worker') // '') => 1 } @a;
    is(scalar(keys %workers), 2, 'answered by both workers');
    like($a[0]{ip}, qr/^h:[0-9a-f]{32}$/, "h: + 32 hex ($a[0]{ip})");
    is(scalar(grep { $_->{ip} eq $a[0]{ip} } @a), 16, 'the same address gives the same hash in every worker');
    my $r = one_tagged($events, 'hash-reload');
    is($r && $r->{ip}, $a[0]{ip}, 'and after a reload');
    my ($b, $b2, $v6) = map { one_tagged($events, $_) } qw(hash-b hash-b2 hash-v6);
    like($b->{ip}, qr/^h:[0-9a-f]{32}$/, 'another address: hashed');
    isnt($b->{ip}, $a[0]{ip}, 'another address, another hash');
    is($b2->{ip}, $b->{ip}, 'same other address, same hash');
    like($v6->{ip}, qr/^h:[0-9a-f]{32}$/, 'IPv6 hashed too');
    for my $e (@a, $b, $v6) {
        unlike($e->{ip}, qr/127\.0\.0|192\.0\.2|2001:db8/, 'never the address itself');
    }
};

subtest 'DNT: 1 and Sec-GPC: 1: kept without ip, ua, personal dims; flagged dnt' => sub {
    my $plain = one_tagged($events, 'plain') or return fail('no plain event');
    is($plain->{ip}, '127.0.0.1', 'plain: ip');
    is($plain->{ua}, 'privacy-test/1.0', 'plain: ua');
    is(dim($plain, 'email'), 'a@b.example', 'plain: personal dimension kept');
    ok(!has_flag($plain, 'dnt'), 'plain: no dnt flag');
    for my $t (qw(dnt gpc dnt-hash)) {
        my $e = one_tagged($events, $t) or return fail("no $t event");
        ok(!exists $e->{ip}, "$t: no ip");
        ok(!exists $e->{ua}, "$t: no ua");
        ok(!defined dim($e, 'email'), "$t: no personal dimension");
        ok(has_flag($e, 'dnt'), "$t: flag dnt");
        is($e->{campaign}, 'free', "$t: campaign kept");
    }
    for my $t (qw(dnt gpc)) {
        my $e = one_tagged($events, $t);
        is(dim($e, 'publisher'), 'news', "$t: non-personal dimension kept");
        is($e->{host}, 'localhost', "$t: host kept");
    }
    my $zero = one_tagged($events, 'dnt0');
    ok($zero && !has_flag($zero, 'dnt') && $zero->{ip} && $zero->{ua}, 'DNT: 0 is not an opt-out');
};

subtest 'a DNT click is still billed' => sub {
    my $e = one_tagged($events, 'dnt-click') or return fail('no event');
    is($e->{type}, 'click', 'a click');
    ok(has_flag($e, 'dnt'), 'flag dnt');
    is($e->{cost_micros}, 500000, 'cost_micros 500000 (price_per_click 0.5)');
    ok(!exists $e->{ip} && !exists $e->{ua} && !defined dim($e, 'email'), 'no ip, ua, email');
    is(dim($e, 'publisher'), 'news', 'publisher kept');
    my $c = one_tagged($events, 'click');
    is($c && $c->{cost_micros}, 500000, 'same cost without DNT');
};

subtest 'tracker_respect_dnt off keeps everything' => sub {
    my $e = one_tagged($events, 'nodnt') or return fail('no event');
    is($e->{ip}, '127.0.0.1', 'ip');
    is($e->{ua}, 'privacy-test/1.0', 'ua');
    is(dim($e, 'email'), 'a@b.example', 'personal dimension');
    ok(!has_flag($e, 'dnt'), 'no dnt flag');
};

subtest 'tracker_userid: a first-party visitor id cookie' => sub {
    like($sc, qr{^tid=[0-9a-f]{32}; Expires=[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d GMT; Max-Age=31536000; Path=/; SameSite=Lax$},
         "set when absent: $sc");
    ok($sc !~ /Secure/, 'no Secure over plain http');
    my $e = one_tagged($events, 'uid-new');
    is($e && $e->{uid}, $uid, 'the event has the new id as uid');
    ok(!defined $u2->{headers}{'set-cookie'}, 'not set again when the request has it');
    is(one_tagged($events, 'uid-back')->{uid}, $uid, 'read back from the request');
    my ($other) = ($u3->{headers}{'set-cookie'} // '') =~ /^tid=([0-9a-f]{32});/;
    ok($other && $other ne $uid, 'an invalid cookie is replaced by a new id');
    is(one_tagged($events, 'uid-bad')->{uid}, $other, 'and that new id is stored');
    for my $t (['uid-dnt', $u4], ['uid-gpc', $u5]) {
        ok(!defined $t->[1]{headers}{'set-cookie'}, "$t->[0]: no Set-Cookie");
        my $ev = one_tagged($events, $t->[0]);
        ok($ev && !exists $ev->{uid} && has_flag($ev, 'dnt'), "$t->[0]: no uid, flag dnt");
    }
    like($u6->{headers}{'set-cookie'} // '', qr{^vid=[0-9a-f]{32}; Expires=[^;]+; Max-Age=86400; Domain=example\.com; Path=/t; SameSite=Lax$},
         'name, domain, path and expiry as configured');
    ok(!defined $u7->{headers}{'set-cookie'}, 'tracker_userid off (default): no cookie');
    like($tls, qr{\r\nSet-Cookie: tid=([0-9a-f]{32}); [^\r]*; SameSite=Lax; Secure\r\n}i, 'Secure over https')
        or diag($tls);
    my ($tid) = $tls =~ /Set-Cookie: tid=([0-9a-f]{32})/i;
    is(one_tagged($events, 'uid-https')->{uid}, $tid, 'stored over https too') if $tid;
    ok(!exists one_tagged($events, 'uid-off')->{uid}, 'and no uid');
};

unlike($ngx->error_log_text, qr/\[(alert|crit|emerg)\]/, 'no [alert], [crit] or [emerg] in the error log');
$ngx->stop;

# --- configuration errors ------------------------------------------------------------------
subtest 'nginx -t refuses bad privacy directives' => sub {
    my %bad = (
        'tracker_ip hashed;' => qr/invalid value "hashed" in "tracker_ip" directive, it must be "full", "anonymize", "hash" or "off"/,
        'tracker_respect_dnt yes;' => qr/invalid value "yes" in "tracker_respect_dnt" directive, it must be "on" or "off"/,
        'tracker_respect_dnt on; tracker_respect_dnt off;' => qr/"tracker_respect_dnt" directive is duplicate/,
        'tracker_dimension e $arg_e private;' => qr/invalid parameter "private" in "tracker_dimension" directive, it must be "personal"/,
        'tracker_dimension e $arg_e personal x;' => qr/invalid number of arguments in "tracker_dimension" directive/,
        'tracker_userid yes;' => qr/invalid value "yes" in "tracker_userid" directive/,
        'tracker_userid_name "a b";' => qr/invalid cookie name "a b" in "tracker_userid_name" directive/,
        'tracker_userid_path t;' => qr/invalid path "t" in "tracker_userid_path" directive/,
        'tracker_userid_domain "a;b";' => qr/invalid domain "a;b" in "tracker_userid_domain" directive/,
        'tracker_userid_expires soon;' => qr/invalid time "soon" in "tracker_userid_expires" directive/,
    );
    location_directives_refused(\%bad);
    my $ok = TrackerTest::Nginx->new(http => <<'HTTP');
    tracker_ring @RING@ 4m;
    tracker_ip hash;
    tracker_respect_dnt off;
    tracker_userid on;
    tracker_userid_expires off;
    tracker_userid_domain none;
    server {
        listen @LISTEN@;
        tracker_respect_dnt on;
        tracker_userid_name uid_2;
        tracker_userid_path /x;
        tracker_dimension e $arg_e personal;
        location = /i { tracker impression; tracker_ip anonymize; tracker_respect_dnt off; }
    }
HTTP
    my ($rc, $out) = $ok->test_conf;
    is($rc, 0, 'all levels accepted') or diag($out);
};

done_testing();
