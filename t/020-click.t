# Clicks: 302 to the campaign's landing URL with {click_id}, {campaign} and {dim.NAME}
# expanded and percent-encoded; crafted values never change the scheme, host or path and never
# inject a header; unknown / paused / ended / invalid campaigns get 404, or the fallback URL;
# the stored events carry the right flags, and the Location's click id is the event's id.
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
add_block_preprocessor(sub { browser_ua(shift) });

our $LONG64 = 'a' x 64;
our $LONG65 = 'b' x 65;

write_campaigns([
    { id => 'summer', status => 'active',
      landing_url => 'https://shop.example.com/summer?pub={dim.publisher}&click={click_id}&c={campaign}',
      # budget fields (no cap reached here)
      price_per_click => 0.25, daily_budget => 100 },
    { id => 'inpath', status => 'active',
      landing_url => 'https://shop.example.com/p/{dim.publisher}/landing' },
    { id => 'paused-one', status => 'paused', landing_url => 'https://shop.example.com/paused' },
    { id => 'ended-one',  status => 'ended',  landing_url => 'https://shop.example.com/ended' },
]);

run_tests();

# ---------------------------------------------------------------------------------------------
my $events = drain();
my $log = read_log("$ENV{TEST_NGINX_WORKDIR}/clicks.log");

# access log lines: TAG STATUS "LOCATION"
my %loc;
for (@$log) {
    my ($tag, $status, $location) = /^(\S+) (\d+) "(.*)"$/ or next;
    $loc{$tag} = { status => $status, location => $location };
}

sub check_click {
    my ($tag, %want) = @_;
    subtest "event $tag" => sub {
        my $e = one_tagged($events, $tag) or return fail("no single event tagged $tag");
        is($e->{type}, 'click', 'type click');
        is($e->{status}, $want{status}, "status $want{status}");
        is_deeply(flags_of($e), [ sort @{ $want{flags} || [] } ], 'flags');
        is($e->{campaign} // '', $want{campaign}, 'campaign');
        is($e->{click_id}, $e->{id}, "a click's click_id is its own id");
        is(dim($e, 'publisher'), $want{publisher}, 'publisher dimension') if exists $want{publisher};
        if ($want{status} == 302 && !$want{no_click_macro}) {
            my $l = $loc{$tag} or return fail("no access log line for $tag");
            my ($click) = $l->{location} =~ /[?&]click=([0-9a-f]{32})(?:&|$)/;
            is($click, $e->{id}, 'the Location carries the stored event id as {click_id}');
        }
    };
}

check_click('c-basic', status => 302, campaign => 'summer', publisher => 'a/b?c&d');
check_click('c-crlf', status => 302, campaign => 'summer', publisher => "\r\nSet-Cookie: evil=1");
check_click('c-slashes', status => 302, campaign => 'summer', publisher => '//evil.com');
check_click('c-at', status => 302, campaign => 'summer', publisher => '@evil.com');
check_click('c-path', status => 302, campaign => 'inpath', publisher => '../../admin?x=1#frag', no_click_macro => 1);
check_click('c-unknown', status => 404, campaign => 'nope', flags => ['unknown_campaign']);
check_click('c-paused', status => 404, campaign => 'paused-one', flags => ['inactive_campaign']);
check_click('c-ended', status => 404, campaign => 'ended-one', flags => ['inactive_campaign']);
# tracker_invalid reject (the default): 400, nothing stored.
sub check_refused {
    my ($tag) = @_;
    is(scalar @{ events_tagged($events, $tag) }, 0, "$tag: invalid campaign id, not stored");
    is($loc{$tag} && $loc{$tag}{status}, 400, "$tag: answered 400");
}
check_refused($_) for qw(c-dotdot c-toolong c-missing c-crlf-cid nc-invalid);
check_click('c-64', status => 404, campaign => $LONG64, flags => ['unknown_campaign']);
check_click('f-unknown', status => 302, campaign => 'nope', flags => ['unknown_campaign']);
check_click('f-paused', status => 302, campaign => 'paused-one', flags => ['inactive_campaign']);
check_click('f-invalid', status => 302, campaign => '', flags => ['invalid_campaign']);
check_click('f-active', status => 302, campaign => 'summer');

check_click('c-enc-cid', status => 302, campaign => 'summer', publisher => 'x');
check_click('srv-fallback', status => 302, campaign => 'nope', flags => ['unknown_campaign'], no_click_macro => 1);
check_click('off-fallback', status => 404, campaign => 'nope', flags => ['unknown_campaign']);
check_click('c-head', status => 302, campaign => 'summer', publisher => 'h');

check_click('nc-unknown', status => 404, campaign => 'nope', flags => ['unknown_campaign']);

is(scalar(@$events), 18, '18 clicks stored (one per valid request)');
my %ids;
$ids{ $_->{id} }++ for @$events;
is(scalar(keys %ids), scalar(@$events), 'all ids unique');
for my $e (@$events) {
    my $l = $loc{ dim($e, 't') // '' };
    next unless $l && $l->{status} == 302;
    like($l->{location}, qr{^https://(shop|fallback)\.example\.com/}, "Location host of " . dim($e, 't'));
}

__DATA__

=== TEST 1: 302 to the landing URL with the macros expanded and percent-encoded
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    location = /c { tracker click; }
--- request
GET /c?cid=summer&t=c-basic&pub=a%2Fb%3Fc%26d
--- error_code: 302
--- response_headers_like
Cache-Control: no-store, no-cache, must-revalidate, max-age=0
Pragma: no-cache
Location: ^https://shop\.example\.com/summer\?pub=a%2Fb%3Fc%26d&click=[0-9a-f]{32}&c=summer$
Expires: ^[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} (19\d\d|200\d) \d\d:\d\d:\d\d GMT$
--- response_body eval
""
--- no_error_log
[alert]
[crit]
[error]



=== TEST 2: crafted dimension values stay inside the query string, no header injection
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    location = /c { tracker click; }
--- request eval
["GET /c?cid=summer&t=c-crlf&pub=%0d%0aSet-Cookie:%20evil=1",
 "GET /c?cid=summer&t=c-slashes&pub=//evil.com",
 "GET /c?cid=summer&t=c-at&pub=\@evil.com"]
--- error_code eval
[302, 302, 302]
--- response_headers_like eval
["Location: ^https://shop\\.example\\.com/summer\\?pub=%0D%0ASet-Cookie%3A%20evil%3D1&click=[0-9a-f]{32}&c=summer\$",
 "Location: ^https://shop\\.example\\.com/summer\\?pub=%2F%2Fevil\\.com&click=[0-9a-f]{32}&c=summer\$",
 "Location: ^https://shop\\.example\\.com/summer\\?pub=%40evil\\.com&click=[0-9a-f]{32}&c=summer\$"]
--- raw_response_headers_unlike eval
[qr/\r\nSet-Cookie/i, qr/Location: https?:\/\/(?!shop\.example\.com\/)/, qr/Location: https?:\/\/(?!shop\.example\.com\/)/]



=== TEST 3: a macro in the path cannot add path segments, a query or a fragment
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    location = /c { tracker click; }
--- request
GET /c?cid=inpath&t=c-path&pub=..%2F..%2Fadmin%3Fx%3D1%23frag
--- error_code: 302
--- response_headers_like
Location: ^https://shop\.example\.com/p/(\.\.|%2E%2E)%2F(\.\.|%2E%2E)%2Fadmin%3Fx%3D1%23frag/landing$



=== TEST 4: unknown, paused and ended campaigns get 404 without a fallback
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    location = /c { tracker click; }
--- request eval
["GET /c?cid=nope&t=c-unknown",
 "GET /c?cid=paused-one&t=c-paused",
 "GET /c?cid=ended-one&t=c-ended",
 "GET /c?cid=$::LONG64&t=c-64"]
--- error_code eval
[404, 404, 404, 404]
--- raw_response_headers_unlike eval
[qr/Location:/i, qr/Location:/i, qr/Location:/i, qr/Location:/i]



=== TEST 5: invalid campaign ids get 400 (tracker_invalid reject, the default)
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    location = /c { tracker click; }
--- request eval
["GET /c?cid=../x&t=c-dotdot",
 "GET /c?cid=$::LONG65&t=c-toolong",
 "GET /c?t=c-missing",
 "GET /c?cid=summer%0d%0a&t=c-crlf-cid"]
--- error_code eval
[400, 400, 400, 400]
--- raw_response_headers_unlike eval
[qr/Location:/i, qr/Location:/i, qr/Location:/i, qr/Location:/i]



=== TEST 6: tracker_fallback_url catches unknown, inactive and (with tracker_invalid flag) invalid campaigns
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    location = /cf {
        tracker click;
        tracker_invalid flag;
        tracker_fallback_url "https://fallback.example.com/lost?c={campaign}&click={click_id}";
    }
--- request eval
["GET /cf?cid=nope&t=f-unknown",
 "GET /cf?cid=paused-one&t=f-paused",
 "GET /cf?cid=../x&t=f-invalid",
 "GET /cf?cid=summer&t=f-active&pub=p"]
--- error_code eval
[302, 302, 302, 302]
--- response_headers_like eval
["Location: ^https://fallback\\.example\\.com/lost\\?c=nope&click=[0-9a-f]{32}\$",
 "Location: ^https://fallback\\.example\\.com/lost\\?c=paused-one&click=[0-9a-f]{32}\$",
 "Location: ^https://fallback\\.example\\.com/lost\\?c=&click=[0-9a-f]{32}\$",
 "Location: ^https://shop\\.example\\.com/summer\\?pub=p&click=[0-9a-f]{32}&c=summer\$"]



=== TEST 7: percent-encoded campaign id; server-level fallback, "off" at a location; HEAD
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    tracker_fallback_url https://fallback.example.com/s;
    location = /c    { tracker click; }
    location = /noff { tracker click; tracker_fallback_url off; }
--- request eval
["GET /c?cid=sum%6Der&t=c-enc-cid&pub=x",
 "GET /c?cid=nope&t=srv-fallback",
 "GET /noff?cid=nope&t=off-fallback",
 "HEAD /c?cid=summer&t=c-head&pub=h"]
--- error_code eval
[302, 302, 404, 302]
--- response_headers_like eval
["Location: ^https://shop\\.example\\.com/summer\\?pub=x&click=[0-9a-f]{32}&c=summer\$",
 "Location: ^https://fallback\\.example\\.com/s\$",
 "",
 "Location: ^https://shop\\.example\\.com/summer\\?pub=h&click=[0-9a-f]{32}&c=summer\$"]



=== TEST 8: the 404 of a redirect without a target forbids caching too ("every answer")
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format clicks '$arg_t $status "$sent_http_location"';
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    access_log $TEST_NGINX_WORKDIR/clicks.log clicks;
    location = /c { tracker click; }
--- request eval
["GET /c?cid=nope&t=nc-unknown", "GET /c?cid=../x&t=nc-invalid"]
--- error_code eval
[404, 400]
--- response_headers_like eval
["Cache-Control: no-store, no-cache, must-revalidate, max-age=0\nPragma: no-cache\nExpires: .*GMT",
 "Cache-Control: no-store, no-cache, must-revalidate, max-age=0\nPragma: no-cache\nExpires: .*GMT"]
