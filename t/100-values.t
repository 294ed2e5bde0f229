# Configured values (tracker_campaign_id, tracker_dimension...): the handler reads a value that
# is exactly one `$arg_NAME` from the query string split once (tracker_core::input::ArgIndex),
# one other variable directly, and anything else through ngx_http_complex_value. Each path
# must give what nginx's own $arg_NAME / complex value gives: case-insensitive names, the
# first of repeated arguments, the raw value up to the next `&`, more arguments than the
# index holds, a map that defines a variable named like an argument, text around a variable.
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

our $MANY = join('&', map { "p$_=$_" } 1 .. 70);

run_tests();

my $events = drain();

subtest '$arg_NAME: case-insensitive names, the first of repeats, raw value to the next &' => sub {
    my $e = one_tagged($events, 'case') or return fail('no event');
    is($e->{campaign}, 'summer', 'CID=summer read by $arg_cid');
    is(dim($e, 'publisher'), 'first', 'the first pub= of two');
    is(dim($e, 'placement'), 'a=b', 'a value with = in it, up to the next &');
    is(dim($e, 'missing'), '', 'an absent argument is empty');
    is(dim($e, 'suffix'), 'yes', 'pubx= is not pub=');
};

subtest 'more arguments than the index holds' => sub {
    my $e = one_tagged($events, 'many') or return fail('no event');
    is($e->{campaign}, 'summer', 'campaign after 70 other arguments');
    is(dim($e, 'publisher'), '70', 'p70, the last of 70');
    is(dim($e, 'placement'), '1', 'p1, the first');
};

subtest 'other variables and complex values' => sub {
    my $e = one_tagged($events, 'complex') or return fail('no event');
    is(dim($e, 'publisher'), 'pre-news-post', 'text around $arg_pub');
    is(dim($e, 'placement'), 'news/top', 'two variables');
    is(dim($e, 'header'), 'from-header', '$http_x_dim');
    is(dim($e, 'cookie'), 'c1', '$cookie_k');
    is(dim($e, 'mapped'), 'from-map', 'a map defining $arg_mapped wins over the argument');
    is(dim($e, 'literal'), 'fixed', 'a value without variables');
};

__DATA__

=== TEST 1: argument names, repeats, values
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_pub;
    tracker_dimension placement $arg_plc;
    tracker_dimension missing   $arg_nothere;
    tracker_dimension suffix    $arg_pubx;
    location = /i { tracker impression; }
--- request
GET /i?Pubx=yes&CID=summer&t=case&pub=first&plc=a=b&pub=second&cid=other
--- error_code: 200



=== TEST 2: more arguments than the index holds (tracker_limits args=100)
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher $arg_p70;
    tracker_dimension placement $arg_p1;
    location = /i { tracker impression; tracker_limits args=100; }
--- request eval
"GET /i?$::MANY&t=many&cid=summer"
--- error_code: 200



=== TEST 3: other variables, text around a variable, a map named like an argument
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    map $uri $arg_mapped { default from-map; }
--- config
    tracker_dimension t         $arg_t;
    tracker_dimension publisher pre-${arg_pub}-post;
    tracker_dimension placement $arg_pub/$arg_plc;
    tracker_dimension header    $http_x_dim;
    tracker_dimension cookie    $cookie_k;
    tracker_dimension mapped    $arg_mapped;
    tracker_dimension literal   fixed;
    location = /i { tracker impression; }
--- more_headers
X-Dim: from-header
Cookie: k=c1
--- request
GET /i?cid=summer&t=complex&pub=news&plc=top&mapped=from-args
--- error_code: 200
