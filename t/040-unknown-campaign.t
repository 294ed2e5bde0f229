# Unknown, inactive and invalid campaigns on pixels: the GIF is always served;
# tracker_unknown_campaign store (default) writes the event with its flag, count only counts it
# as "rejected" in the ring header (seen by `tracker-shipper stats`).
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

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/summer' },
    { id => 'paused-one', status => 'paused', landing_url => 'https://shop.example.com/paused' },
]);

run_tests();

# ---------------------------------------------------------------------------------------------
my $h = ring_header();
my $events = drain();

sub flags_for { my $e = one_tagged($events, shift); return $e ? flags_of($e) : undef }

is_deeply(flags_for('st-unknown'), ['unknown_campaign'], 'store: unknown campaign stored, flagged');
is_deeply(flags_for('st-paused'), ['inactive_campaign'], 'store: paused campaign stored, flagged');
# An invalid id is refused whatever tracker_unknown_campaign says (tracker_invalid reject).
is(scalar @{ events_tagged($events, 'st-invalid') }, 0, 'store: an invalid id is refused, not stored');
my $unk = one_tagged($events, 'st-unknown');
is($unk && $unk->{campaign}, 'nope', 'store: an unknown id is stored');

for my $t (qw(cnt-unknown cnt-paused cnt-invalid cntc-unknown cntv-unknown inh-unknown)) {
    is(scalar @{ events_tagged($events, $t) }, 0, "count: $t not stored");
}
for my $t (qw(cnt-ok cntc-ok inh-ok over-unknown)) {
    is(scalar @{ events_tagged($events, $t) }, 1, "$t stored");
}
is_deeply(flags_for('cnt-ok'), [], 'count: an active campaign is stored without flags');
is_deeply(flags_for('over-unknown'), ['unknown_campaign'], 'location "store" overrides server "count"');

# rejected: impression cnt-unknown, cnt-paused, inh-unknown; click cntc-unknown;
# video cntv-unknown. st-invalid and cnt-invalid are counted as invalid campaign ids.
is($h->{rejected}[0], 3, 'rejected impressions: 3');
is($h->{rejected}[1], 1, 'rejected clicks: 1');
is($h->{rejected}[3], 1, 'rejected video events: 1');
is($h->{rejected_total}, 5, 'rejected total: 5');
is($h->{invalid}{invalid_campaign}, 2, 'invalid campaign ids: 2');
is($h->{written_total}, scalar(@$events), 'written counters = stored events');
is($h->{dropped_full_total}, 0, 'nothing dropped');

my $s = eval { shipper_stats() };
ok($s, 'tracker-shipper stats runs') or diag $@;
if ($s) {
    is_deeply($s->{rejected}, $h->{rejected}, 'shipper stats: rejected per kind');
    is($s->{rejected_total}, 5, 'shipper stats: 5 rejected');
    is_deeply($s->{invalid}, $h->{invalid}, 'shipper stats: invalid per reason');
    is_deeply($s->{written}, $h->{written}, 'shipper stats: written per kind');
}

__DATA__

=== TEST 1: pixels get the GIF whatever the campaign (store and count)
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /st  { tracker impression; }
    location = /cnt { tracker impression; tracker_unknown_campaign count; }
--- request eval
["GET /st?cid=nope&t=st-unknown",
 "GET /st?cid=paused-one&t=st-paused",
 "GET /st?cid=../x&t=st-invalid",
 "GET /cnt?cid=nope&t=cnt-unknown",
 "GET /cnt?cid=paused-one&t=cnt-paused",
 "GET /cnt?cid=%20&t=cnt-invalid",
 "GET /cnt?cid=summer&t=cnt-ok"]
--- error_code eval
[200, 200, 200, 200, 200, 200, 200]
--- response_headers eval
[("Content-Type: image/gif\nContent-Length: 43") x 7]
--- response_body eval
[(TrackerTest::gif_bytes()) x 7]
--- no_error_log
[alert]
[crit]



=== TEST 2: count on clicks (404 either way) and video
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    location = /cntc { tracker click; tracker_unknown_campaign count; }
    location = /cntv { tracker video; tracker_unknown_campaign count; }
--- request eval
["GET /cntc?cid=nope&t=cntc-unknown",
 "GET /cntc?cid=summer&t=cntc-ok",
 "GET /cntv?cid=nope&t=cntv-unknown&event=q1"]
--- error_code eval
[404, 302, 200]
--- response_headers_like eval
["", "Location: ^https://shop\\.example\\.com/summer\$", "Content-Type: ^image/gif\$"]



=== TEST 3: count inherited from the server level, store at a location overrides it
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension t $arg_t;
    tracker_unknown_campaign count;
    location = /inh  { tracker impression; }
    location = /over { tracker impression; tracker_unknown_campaign store; }
--- request eval
["GET /inh?cid=nope&t=inh-unknown",
 "GET /inh?cid=summer&t=inh-ok",
 "GET /over?cid=nope&t=over-unknown"]
--- error_code eval
[200, 200, 200]
--- response_body eval
[(TrackerTest::gif_bytes()) x 3]
