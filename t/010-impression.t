# Impressions: the pixel answer (status, headers, the exact 43-byte GIF), methods, and the
# event stored for each request (type, campaign, dims decoded, ip modes, ua, referer, host,
# status, id layout).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::Nginx::Socket 'no_plan';
use Test::More import => [qw(subtest explain cmp_ok)];

repeat_each(1);
no_shuffle();
no_long_string();

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/summer' },
]);

our $LONG_UA = 'Mozilla/5.0 ' . ('u' x 4000);
our $LONG_REF = 'https://pub.example/' . ('r' x 6000);

my $t0 = time;
run_tests();
my $t1 = time;

# ---------------------------------------------------------------------------------------------
# The stored events.
# ---------------------------------------------------------------------------------------------
my $events = drain();
my $gif = gif_bytes();

subtest 'GIF bytes match src/response.rs' => sub {
    my $src = read_file("$TrackerTest::ROOT/src/response.rs");
    my ($arr) = $src =~ /static GIF: \[u8; 43\] = \[(.*?)\];/s;
    ok($arr, 'found the GIF array in src/response.rs') or return;
    $arr =~ s{//[^\n]*}{}g;
    my $bytes = '';
    for my $tok (grep { /\S/ } split /,/, $arr) {
        $tok =~ s/^\s+|\s+$//g;
        if ($tok =~ /^b'(.)'$/) { $bytes .= $1 }
        elsif ($tok =~ /^0x([0-9a-fA-F]{1,2})$/) { $bytes .= chr hex $1 }
        else { fail("unparsed token $tok"); return }
    }
    is(length $bytes, 43, '43 bytes');
    is(unpack('H*', $bytes), unpack('H*', $gif), 'same bytes as the test expects');
};

subtest 'GET: stored impression with all common fields' => sub {
    my $e = one_tagged($events, 'imp-get') or return fail('no event');
    is($e->{type}, 'impression', 'type');
    is($e->{_type_dir}, 'impression', 'written under type=impression/');
    is($e->{v}, 1, 'schema version 1');
    like($e->{id}, qr/^[0-9a-f]{32}$/, 'id is 32 lowercase hex');
    like(substr($e->{id}, 12, 1), qr/^7$/, 'id has the UUIDv7 version nibble');
    like(substr($e->{id}, 16, 1), qr/^[89ab]$/, 'id has the RFC 4122 variant');
    is($e->{campaign}, 'summer', 'campaign');
    is(dim($e, 'publisher'), 'a b', 'pub=a%20b decoded to "a b"');
    is(dim($e, 'placement'), 'x+y z', 'plc=x%2By+z decoded to "x+y z" (+ is a space, %2B a plus)');
    is($e->{ip}, '127.0.0.0', 'ip anonymized to its /24 (tracker_ip default)');
    is($e->{ua}, 'tracker-test/1.0 (impression)', 'user agent');
    is($e->{referer}, 'https://pub.example/article?id=7&x=%20', 'referer as sent');
    is($e->{host}, 'localhost', 'host');
    is($e->{status}, 200, 'status 200');
    is_deeply(flags_of($e), [], 'no flags');
    ok(!defined $e->{click_id}, 'no click_id on a plain impression');
    ok(!defined $e->{value} && !defined $e->{video_event} && !defined $e->{watch_time},
       'no value, video_event or watch_time');
    ok($e->{ts} >= int($t0 * 1e6) - 2e6 && $e->{ts} <= int($t1 * 1e6) + 2e6,
       "ts ($e->{ts}) within the run") or diag("t0=$t0 t1=$t1");
    my $id_ms = do { no warnings "portable"; hex substr($e->{id}, 0, 12) };
    ok(abs($id_ms - int($e->{ts} / 1000)) <= 1, 'the id encodes the event time (ms)')
        or diag("id ms $id_ms, ts $e->{ts}");
    like($e->{time} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)$/, 'time is RFC 3339 UTC');
};

subtest 'HEAD and POST are tracked, PUT/DELETE/OPTIONS are not' => sub {
    my $head = one_tagged($events, 'imp-head');
    ok($head, 'HEAD stored') and is($head->{status}, 200, 'HEAD status 200');
    my $post = one_tagged($events, 'imp-post');
    ok($post, 'POST stored') and is($post->{campaign}, 'summer', 'POST campaign');
    for my $t (qw(imp-put imp-delete imp-options)) {
        is(scalar @{ events_tagged($events, $t) }, 0, "$t: no event for a 405");
    }
};

subtest 'tracker_ip full / off / anonymize per location' => sub {
    my $full = one_tagged($events, 'ip-full');
    is($full && $full->{ip}, '127.0.0.1', 'full keeps the address');
    my $off = one_tagged($events, 'ip-off');
    ok($off && !defined $off->{ip}, 'off stores no address');
    my $anon = one_tagged($events, 'ip-anon-loc');
    is($anon && $anon->{ip}, '127.0.0.0', 'anonymize set at location level');
};

subtest 'dimension values: UTF-8, invalid UTF-8, truncation' => sub {
    my $u = one_tagged($events, 'dim-utf8');
    is($u && dim($u, 'publisher'), "caf\x{e9}", 'caf%C3%A9 stored as "café"');
    my $bad = one_tagged($events, 'dim-badutf8');
    is($bad && dim($bad, 'publisher'), "\x{fffd}ok", '%FF replaced by U+FFFD');
    my $long = one_tagged($events, 'dim-long');
    ok($long, 'long value stored') or return;
    is(length dim($long, 'publisher'), 1024, 'cut to 1024 bytes');
    is(dim($long, 'publisher'), 'x' x 1024, 'the first 1024 bytes');
    ok(has_flag($long, 'truncated'), 'flag truncated (tracker_invalid flag)');
    is(scalar @{ events_tagged($events, 'dim-long-rejected') }, 0, 'tracker_invalid reject (the default): not stored');
    my $exact = one_tagged($events, 'dim-1024');
    ok($exact && length(dim($exact, 'publisher')) == 1024 && !has_flag($exact, 'truncated'),
       '1024 bytes exactly: kept whole, not flagged');
};

subtest 'dimensions inherit like add_header' => sub {
    my $own = one_tagged($events, 'dim-own');
    ok($own, 'stored') or return;
    is(dim($own, 'own'), 'mine', 'location dimension recorded');
    ok(!defined dim($own, 'publisher'), 'server dimensions not inherited by a level with its own');
    my $inh = one_tagged($events, 'imp-get');
    ok($inh && !defined dim($inh, 'own'), 'a location without dimensions inherits the server ones only');
};

subtest 'client address through set_real_ip_from: IPv4 /24, IPv6 /48, IPv4-mapped' => sub {
    my %want = ('rip-v4' => '192.0.2.0', 'rip-v6' => '2001:db8:1::', 'rip-mapped' => '::ffff:192.0.2.0',
                'rip-v6-full' => '2001:db8:1:2::5');
    for my $t (sort keys %want) {
        my $e = one_tagged($events, $t);
        is($e && $e->{ip}, $want{$t}, "$t: ip $want{$t}");
    }
};

subtest 'long User-Agent and Referer are cut and flagged' => sub {
    my $e = one_tagged($events, 'long-headers') or return fail('no event');
    my ($ua, $ref) = ($e->{ua} // '', $e->{referer} // '');
    ok(length($ua) > 0, 'ua stored (' . length($ua) . ' of ' . length($::LONG_UA) . ' bytes)');
    is($ua, substr($::LONG_UA, 0, length $ua), 'ua is a prefix of the sent one');
    ok(length($ref) > 0, 'referer stored (' . length($ref) . ' of ' . length($::LONG_REF) . ' bytes)');
    is($ref, substr($::LONG_REF, 0, length $ref), 'referer is a prefix of the sent one');
    my $cut = length($ua) < length($::LONG_UA) || length($ref) < length($::LONG_REF);
    is(has_flag($e, 'truncated') ? 1 : 0, $cut ? 1 : 0,
       'flag truncated exactly when a header was cut (docs/event-schema.md: "cut to the module\'s limit, flag truncated")')
        or diag explain flags_of($e);
};

subtest 'campaign id from another variable; dims {} without dimensions' => sub {
    is(scalar @{ events_tagged($events, 'cid-header') }, 0, 'no t dimension in that location');
    my ($h) = grep { ($_->{campaign} // '') eq 'summer' && ($_->{ua} // '') eq 'cid-from-header' } @$events;
    ok($h, 'tracker_campaign_id $http_x_campaign: stored') or return;
    is_deeply(flags_of($h), [], 'an active campaign, no flags');
    is_deeply($h->{dims}, {}, 'dims is {} for a location without dimensions');
};

subtest 'POST bodies are discarded, keepalive goes on' => sub {
    my $big = one_tagged($events, 'post-big');
    ok($big, 'a POST with a 200k body is stored');
    ok(one_tagged($events, 'after-post'), 'the pipelined GET after it is stored');
    my $ch = one_tagged($events, 'post-chunked');
    ok($ch, 'a chunked POST is stored');
};

is(scalar(grep { $_->{type} ne 'impression' } @$events), 0, 'only impressions in the ring');

__DATA__

=== TEST 1: GET answers 200 with the exact transparent GIF and no-cache headers
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    tracker_dimension placement $arg_plc;
    location = /i { tracker impression; }
--- more_headers
User-Agent: tracker-test/1.0 (impression)
Referer: https://pub.example/article?id=7&x=%20
--- request
GET /i?cid=summer&t=imp-get&pub=a%20b&plc=x%2By+z
--- response_headers_like
Content-Type: image/gif
Content-Length: 43
Cache-Control: no-store, no-cache, must-revalidate, max-age=0
Pragma: no-cache
Expires: ^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} (19\d\d|200\d) \d\d:\d\d:\d\d GMT$
--- response_body eval
TrackerTest::gif_bytes()
--- no_error_log
[alert]
[crit]
[error]



=== TEST 2: HEAD gives the headers without a body
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    location = /i { tracker impression; }
--- request
HEAD /i?cid=summer&t=imp-head
--- response_headers
Content-Type: image/gif
Content-Length: 43
Cache-Control: no-store, no-cache, must-revalidate, max-age=0
Pragma: no-cache
--- response_body eval
""



=== TEST 3: POST (a postback with a body) gets the GIF
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    location = /i { tracker impression; }
--- more_headers
Content-Type: application/x-www-form-urlencoded
--- request
POST /i?cid=summer&t=imp-post
x=1&y=2&padding=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
--- response_headers
Content-Type: image/gif
Content-Length: 43
--- response_body eval
TrackerTest::gif_bytes()



=== TEST 4: PUT is not allowed
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /i { tracker impression; }
--- request
PUT /i?cid=summer&t=imp-put
hello
--- error_code: 405
--- raw_response_headers_unlike
Content-Type: image/gif



=== TEST 5: DELETE is not allowed
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /i { tracker impression; }
--- request
DELETE /i?cid=summer&t=imp-delete
--- error_code: 405



=== TEST 6: OPTIONS is not allowed
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /i { tracker impression; }
--- request
OPTIONS /i?cid=summer&t=imp-options
--- error_code: 405



=== TEST 7: tracker_ip per location: full, off, anonymize
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    tracker_ip off;
--- config
    tracker_dimension t $arg_t;
    location = /full { tracker impression; tracker_ip full; }
    location = /off  { tracker impression; }
    location = /anon { tracker impression; tracker_ip anonymize; }
--- request eval
["GET /full?cid=summer&t=ip-full", "GET /off?cid=summer&t=ip-off", "GET /anon?cid=summer&t=ip-anon-loc"]
--- error_code eval
[200, 200, 200]
--- response_body eval
[TrackerTest::gif_bytes(), TrackerTest::gif_bytes(), TrackerTest::gif_bytes()]



=== TEST 8: dimension values: UTF-8, invalid UTF-8, 1025+ bytes, 1024 bytes
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    location = /i { tracker impression; tracker_invalid flag; }
    location = /r { tracker impression; }
--- request eval
["GET /i?cid=summer&t=dim-utf8&pub=caf%C3%A9",
 "GET /i?cid=summer&t=dim-badutf8&pub=%FFok",
 "GET /i?cid=summer&t=dim-long&pub=" . ("x" x 1100),
 "GET /r?cid=summer&t=dim-long-rejected&pub=" . ("x" x 1100),
 "GET /r?cid=summer&t=dim-1024&pub=" . ("y" x 1024)]
--- error_code eval
[200, 200, 200, 200, 200]



=== TEST 9: a location with its own dimensions does not inherit the server's
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    location = /own {
        tracker impression;
        tracker_dimension t   $arg_t;
        tracker_dimension own $arg_own;
    }
--- request
GET /own?cid=summer&t=dim-own&own=mine&pub=should-not-appear
--- response_body eval
TrackerTest::gif_bytes()



=== TEST 10: the client address is nginx's (set_real_ip_from applies): IPv4, IPv6, IPv4-mapped
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    set_real_ip_from 127.0.0.1;
    real_ip_header   X-Forwarded-For;
    location = /i    { tracker impression; }
    location = /full { tracker impression; tracker_ip full; }
--- more_headers eval
["X-Forwarded-For: 192.0.2.77", "X-Forwarded-For: 2001:db8:1:2::5", "X-Forwarded-For: ::ffff:192.0.2.7",
 "X-Forwarded-For: 2001:db8:1:2::5"]
--- request eval
["GET /i?cid=summer&t=rip-v4", "GET /i?cid=summer&t=rip-v6", "GET /i?cid=summer&t=rip-mapped",
 "GET /full?cid=summer&t=rip-v6-full"]
--- error_code eval
[200, 200, 200, 200]



=== TEST 11: long User-Agent and Referer
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    large_client_header_buffers 4 16k;
--- config
    tracker_dimension t $arg_t;
    location = /i { tracker impression; }
--- more_headers eval
"User-Agent: $::LONG_UA\nReferer: $::LONG_REF"
--- request
GET /i?cid=summer&t=long-headers
--- response_body eval
TrackerTest::gif_bytes()



=== TEST 12: tracker_campaign_id from a header; a location without dimensions
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    location = /h { tracker impression; tracker_campaign_id $http_x_campaign; }
--- more_headers
X-Campaign: summer
User-Agent: cid-from-header
--- request
GET /h?cid=not-this-one&t=cid-header
--- response_body eval
TrackerTest::gif_bytes()



=== TEST 13: a POST with a large body, then a pipelined GET on the same connection
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /i { tracker impression; tracker_limits body=1m; }
--- pipelined_requests eval
["POST /i?cid=summer&t=post-big\n" . ("b" x 200000), "GET /i?cid=summer&t=after-post"]
--- error_code eval
[200, 200]
--- response_body eval
[TrackerTest::gif_bytes(), TrackerTest::gif_bytes()]



=== TEST 14: a chunked POST
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /i { tracker impression; }
--- more_headers
Transfer-Encoding: chunked
--- request eval
"POST /i?cid=summer&t=post-chunked
5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
--- response_body eval
TrackerTest::gif_bytes()
