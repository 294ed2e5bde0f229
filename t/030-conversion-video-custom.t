# Conversions (click_id, value), video events (video_event, watch_time), custom event types,
# and the response= parameter (empty, redirect, gif) on custom and click locations.
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

our $CLICK = '0123456789abcdef0123456789abcdef';
our $LONG_CLICK = 'k' x 200;

write_campaigns([
    { id => 'summer', status => 'active',
      landing_url => 'https://shop.example.com/summer?click={click_id}&c={campaign}' },
]);

run_tests();

# ---------------------------------------------------------------------------------------------
my $events = drain();

sub ev {
    my $tag = shift;
    my $e = one_tagged($events, $tag);
    fail("no single event tagged $tag") unless $e;
    return $e || {};
}

subtest 'conversion: click_id and value' => sub {
    my $e = ev('cv-ok');
    is($e->{type}, 'conversion', 'type conversion');
    is($e->{_type_dir}, 'conversion', 'written under type=conversion/');
    is($e->{click_id}, $CLICK, 'click_id from the request');
    ok(defined $e->{value} && $e->{value} == 12.5, 'value=12.50 stored as 12.5') or diag explain $e->{value};
    is_deeply(flags_of($e), [], 'no flags');
    is($e->{status}, 200, 'status 200');

    my $i = ev('cv-int');
    ok(defined $i->{value} && $i->{value} == 3, 'value=3 stored as 3');

    my $bad = ev('cv-badvalue');
    ok(!defined $bad->{value}, 'value=abc left out');
    is_deeply(flags_of($bad), ['invalid_value'], 'flag invalid_value');

    my $none = ev('cv-novalue');
    ok(!defined $none->{value}, 'no value without value=');
    is_deeply(flags_of($none), [], 'and no flag');

    my $post = ev('cv-post');
    is($post->{click_id}, 'postback-click', 'POST postback: click_id');
    ok(defined $post->{value} && $post->{value} == 7, 'POST postback: value');

    my $long = ev('cv-longclick');
    is($long->{click_id}, 'k' x 128, 'click_id cut to 128 bytes');
    ok(has_flag($long, 'truncated'), 'flag truncated');

    my $enc = ev('cv-encclick');
    is($enc->{click_id}, 'a+b c', 'click_id percent-decoded');

    my $custom = ev('cv-custom');
    ok(defined $custom->{value} && $custom->{value} == 4.75, 'tracker_value $arg_amount: value from amount=, not value=');
    is($custom->{click_id}, 'kk', 'tracker_click_id $arg_k');
    for my $t (qw(cv-inf cv-nan cv-comma)) {
        my $e = ev($t);
        ok(!defined $e->{value} && has_flag($e, 'invalid_value'), "$t: not a decimal number, flagged");
    }
};

subtest 'video: video_event and watch_time' => sub {
    my $e = ev('v-q1');
    is($e->{type}, 'video', 'type video');
    is($e->{video_event}, 'q1', 'video_event q1');
    ok(defined $e->{watch_time} && $e->{watch_time} == 7.5, 'watch_time 7.5');
    is_deeply(flags_of($e), [], 'no flags');
    for my $name (qw(start mid q3 complete)) {
        is(ev("v-$name")->{video_event}, $name, "video_event $name");
    }
    my $bogus = ev('v-bogus');
    ok(!defined $bogus->{video_event}, 'event=bogus left out');
    ok(has_flag($bogus, 'invalid_video_event'), 'flag invalid_video_event');
    my $upper = ev('v-upper');
    ok(!defined $upper->{video_event} && has_flag($upper, 'invalid_video_event'), 'event=Q1 is not q1');
    my $vc = ev('v-custom');
    is($vc->{video_event}, 'q3', 'tracker_video_event $arg_ve');
    ok(defined $vc->{watch_time} && $vc->{watch_time} == 2.5, 'tracker_watch_time $arg_wt');
    my $wt = ev('v-badtime');
    is($wt->{video_event}, 'mid', 'video_event kept');
    ok(!defined $wt->{watch_time}, 'watch_time=abc left out');
    ok(has_flag($wt, 'invalid_value'), 'flag invalid_value');
};

subtest 'custom types' => sub {
    my $s = ev('b-signup');
    is($s->{type}, 'signup', 'type signup');
    is($s->{_type_dir}, 'signup', 'written under type=signup/');
    is($s->{status}, 204, 'status 204 (response=empty)');
    my $cv = ev('b-values');
    is($cv->{click_id}, 'abc', 'custom event carries click_id');
    ok(defined $cv->{value} && $cv->{value} == 3.25, 'custom event carries value');
    my $lead = ev('lead-ok');
    is($lead->{type}, 'lead', 'type lead');
    is($lead->{status}, 302, 'status 302 (response=redirect)');
    my $lead404 = ev('lead-unknown');
    is($lead404->{status}, 404, 'redirect with an unknown campaign: 404');
    ok(has_flag($lead404, 'unknown_campaign'), 'flag unknown_campaign');
    my $app = ev('app-open');
    is($app->{type}, 'app-open_v2', 'type app-open_v2');
    is($app->{status}, 200, 'default answer of a custom type: 200 GIF');
};

subtest 'click with response=gif' => sub {
    my $c = ev('cg');
    is($c->{type}, 'click', 'type click');
    is($c->{status}, 200, 'status 200');
    is($c->{click_id}, $c->{id}, 'click_id is its own id');
};

subtest 'ring counters per kind (custom types under "custom")' => sub {
    my %n;
    $n{ kind_index($_->{type}) }++ for @$events;
    my $h = ring_header();
    for my $k (0 .. 4) {
        is($h->{written}[$k], $n{$k} || 0, "written[$k] = stored events of that kind");
    }
    ok(($n{4} || 0) >= 5, 'custom events counted under custom');
    my $s = eval { shipper_stats() };
    ok($s, 'shipper stats') or return diag $@;
    is_deeply($s->{written}, $h->{written}, 'shipper stats show the same written counters');
};

__DATA__

=== TEST 1: conversion with click_id and value (tracker_invalid flag)
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_invalid flag;
    tracker_dimension t $arg_t;
    location = /cv { tracker conversion; }
--- request eval
["GET /cv?cid=summer&t=cv-ok&click_id=$::CLICK&value=12.50",
 "GET /cv?cid=summer&t=cv-int&click_id=$::CLICK&value=3",
 "GET /cv?cid=summer&t=cv-badvalue&click_id=$::CLICK&value=abc",
 "GET /cv?cid=summer&t=cv-novalue&click_id=$::CLICK",
 "GET /cv?cid=summer&t=cv-longclick&click_id=$::LONG_CLICK",
 "GET /cv?cid=summer&t=cv-encclick&click_id=a%2Bb+c"]
--- error_code eval
[200, 200, 200, 200, 200, 200]
--- response_body eval
[TrackerTest::gif_bytes(), TrackerTest::gif_bytes(), TrackerTest::gif_bytes(),
 TrackerTest::gif_bytes(), TrackerTest::gif_bytes(), TrackerTest::gif_bytes()]
--- no_error_log
[alert]
[crit]



=== TEST 2: a server-to-server postback (POST with a body)
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /cv { tracker conversion; }
--- more_headers
Content-Type: application/json
--- request
POST /cv?cid=summer&t=cv-post&click_id=postback-click&value=7
{"order": "A-1", "amount": 7}
--- response_headers
Content-Type: image/gif
--- response_body eval
TrackerTest::gif_bytes()



=== TEST 3: video events and watch time (tracker_invalid flag)
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_invalid flag;
    tracker_dimension t $arg_t;
    location = /v { tracker video; }
--- request eval
["GET /v?cid=summer&t=v-q1&event=q1&watch_time=7.5",
 "GET /v?cid=summer&t=v-start&event=start",
 "GET /v?cid=summer&t=v-mid&event=mid",
 "GET /v?cid=summer&t=v-q3&event=q3",
 "GET /v?cid=summer&t=v-complete&event=complete",
 "GET /v?cid=summer&t=v-bogus&event=bogus",
 "GET /v?cid=summer&t=v-upper&event=Q1",
 "GET /v?cid=summer&t=v-badtime&event=mid&watch_time=abc"]
--- error_code eval
[200, 200, 200, 200, 200, 200, 200, 200]
--- response_body eval
[TrackerTest::gif_bytes(), TrackerTest::gif_bytes(), TrackerTest::gif_bytes(), TrackerTest::gif_bytes(),
 TrackerTest::gif_bytes(), TrackerTest::gif_bytes(), TrackerTest::gif_bytes(), TrackerTest::gif_bytes()]



=== TEST 4: custom type with response=empty: 204 without a body
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /b { tracker signup response=empty; }
--- request eval
["GET /b?cid=summer&t=b-signup", "GET /b?cid=summer&t=b-values&click_id=abc&value=3.25"]
--- error_code eval
[204, 204]
--- response_headers eval
["Cache-Control: no-store, no-cache, must-revalidate, max-age=0\nPragma: no-cache",
 "Cache-Control: no-store, no-cache, must-revalidate, max-age=0\nPragma: no-cache"]
--- raw_response_headers_unlike eval
[qr/Content-Type: image\/gif/i, qr/Content-Type: image\/gif/i]
--- response_body eval
["", ""]



=== TEST 5: custom type with response=redirect answers like a click
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /lead { tracker lead response=redirect; }
--- request eval
["GET /lead?cid=summer&t=lead-ok&click_id=$::CLICK", "GET /lead?cid=nope&t=lead-unknown"]
--- error_code eval
[302, 404]
--- response_headers_like eval
["Location: ^https://shop\\.example\\.com/summer\\?click=[0-9a-zA-Z%]*&c=summer\$\nCache-Control: no-store, no-cache, must-revalidate, max-age=0", ""]



=== TEST 6: click with response=gif
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /cg { tracker click response=gif; }
--- request
GET /cg?cid=summer&t=cg
--- response_headers
Content-Type: image/gif
Content-Length: 43
--- raw_response_headers_unlike
Location:
--- response_body eval
TrackerTest::gif_bytes()



=== TEST 7: a custom type name with - and _ answers the GIF by default
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /app { tracker app-open_v2; }
--- request
GET /app?cid=summer&t=app-open
--- response_headers
Content-Type: image/gif
--- response_body eval
TrackerTest::gif_bytes()



=== TEST 8: tracker_value, tracker_click_id, tracker_video_event, tracker_watch_time from other variables; non-numbers (tracker_invalid flag)
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_invalid flag;
    tracker_dimension t $arg_t;
    location = /cv  { tracker conversion; }
    location = /cv2 { tracker conversion; tracker_value $arg_amount; tracker_click_id $arg_k; }
    location = /v2  { tracker video; tracker_video_event $arg_ve; tracker_watch_time $arg_wt; }
--- request eval
["GET /v2?cid=summer&t=v-custom&ve=q3&wt=2.5&event=start&watch_time=9",
 "GET /cv2?cid=summer&t=cv-custom&amount=4.75&k=kk&value=999&click_id=no",
 "GET /cv?cid=summer&t=cv-inf&value=inf",
 "GET /cv?cid=summer&t=cv-nan&value=NaN",
 "GET /cv?cid=summer&t=cv-comma&value=1,5"]
--- error_code eval
[200, 200, 200, 200, 200]
