# A request whose event cannot be stored keeps no charge and records no duplicates key (issue
# 21, finding 3). On a full ring, a conversion postback answered 503 (`tracker_ring_full 503`)
# and retried once the ring has room is charged exactly once and stored once: without a
# duplicates zone, with `tracker_duplicates flag` (the retry is not a duplicate) and with
# `count` (the retry is stored). A click on a full ring with `serve` (answered, event dropped)
# and an event too large for the ring are not charged either.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use JSON::PP ();

my $PAD = 'p' x 200;
my $BIGPAD = 'q' x 260;    # larger than the fill's events: they cannot fit in what is left

write_campaigns([
    { id => 'fill', status => 'active', landing_url => 'https://shop.example.com/f' },
    map({ { id => $_, status => 'active', landing_url => 'https://shop.example.com/l',
            price_per_conversion => 2, price_per_click => 0.5 } } qw(plain flagged counted clk big)),
]);

my $ngx = TrackerTest::Nginx->new(workers => 1, log_level => 'warn', http => <<'HTTP');
    tracker_ring      @RING@ 64k;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    tracker_duplicates_zone 1m window=1h;
    server {
        listen @LISTEN@;
        keepalive_requests 100000;
        tracker_dimension t   $arg_t;
        tracker_dimension pad $arg_pad;
        location = /i      { tracker impression; }
        location = /cv     { tracker conversion response=empty; tracker_ring_full 503; }
        location = /cvflag { tracker conversion response=empty; tracker_ring_full 503; tracker_duplicates flag; }
        location = /cvcnt  { tracker conversion response=empty; tracker_ring_full 503; tracker_duplicates count; }
        location = /c      { tracker click; tracker_duplicates flag; tracker_duplicates_key $arg_k; }
        location = /cvbig {
            tracker conversion response=empty;
            tracker_duplicates flag;
            tracker_dimension t $arg_t;
            tracker_dimension d1 $arg_x;  tracker_dimension d2 $arg_x;  tracker_dimension d3 $arg_x;
            tracker_dimension d4 $arg_x;  tracker_dimension d5 $arg_x;  tracker_dimension d6 $arg_x;
            tracker_dimension d7 $arg_x;  tracker_dimension d8 $arg_x;  tracker_dimension d9 $arg_x;
            tracker_dimension d10 $arg_x; tracker_dimension d11 $arg_x; tracker_dimension d12 $arg_x;
            tracker_dimension d13 $arg_x; tracker_dimension d14 $arg_x; tracker_dimension d15 $arg_x;
            tracker_dimension d16 $arg_x; tracker_dimension d17 $arg_x; tracker_dimension d18 $arg_x;
            tracker_dimension d19 $arg_x; tracker_dimension d20 $arg_x;
        }
        location /tracker/campaigns { tracker_admin; }
    }
HTTP
$ngx->start;
my $c = $ngx->client;

sub counters {
    my $id = shift;
    my $r = $c->get("/tracker/campaigns/$id");
    return {} unless $r->{status} == 200;
    my $j = eval { JSON::PP::decode_json($r->{body}) } || {};
    return $j->{counters} || {};
}

# 1. Fill the ring.
$c->get("/i?cid=fill&t=fill&pad=$PAD") for 1 .. 1000;
my $dropped = ring_header()->{dropped_full_total};
ok($dropped > 0, 'the ring is full');

# 2. Conversions and a click on the full ring.
is($c->get("/cv?cid=plain&t=plain-1&click_id=A&value=10&pad=$BIGPAD")->{status}, 503, 'plain: 503');
is($c->get("/cvflag?cid=flagged&t=flagged-1&click_id=B&value=10&pad=$BIGPAD")->{status}, 503, 'flag: 503');
is($c->get("/cvcnt?cid=counted&t=counted-1&click_id=C&value=10&pad=$BIGPAD")->{status}, 503, 'count: 503');
my $r = $c->get("/c?cid=clk&t=clk-1&k=K1&pad=$BIGPAD");
is($r->{status}, 302, 'a click on a full ring with serve: still 302');
is($r->{headers}{location}, 'https://shop.example.com/l', 'to the landing URL');
is(ring_header()->{dropped_full_total}, $dropped + 4, 'all four dropped (dropped_full)');

for my $id (qw(plain flagged counted clk)) {
    my $k = counters($id);
    is($k->{spend_micros}, 0, "$id: nothing charged for the dropped event") or diag explain $k;
    is($k->{spend_today_micros}, 0, "$id: nothing charged today");
    is($k->{value_micros}, 0, "$id: no value counted") if $id ne 'clk';
}
is(counters('clk')->{clicks_today}, 0, 'clk: no click charged today');
is(counters('plain')->{conversions}, 1, 'the dropped conversion is still counted as seen');

# 3. Drain: the ring takes events again; the senders retry.
drain();
is($c->get("/cv?cid=plain&t=plain-2&click_id=A&value=10")->{status}, 204, 'plain retry: 204');
is($c->get("/cvflag?cid=flagged&t=flagged-2&click_id=B&value=10")->{status}, 204, 'flag retry: 204');
is($c->get("/cvcnt?cid=counted&t=counted-2&click_id=C&value=10")->{status}, 204, 'count retry: 204');
is($c->get('/c?cid=clk&t=clk-2&k=K1')->{status}, 302, 'click again: 302');
# A third attempt after the stored one is a duplicate again (the key was recorded this time).
is($c->get("/cvflag?cid=flagged&t=flagged-3&click_id=B&value=10")->{status}, 204, 'flag, once more: 204');

for my $id (qw(plain flagged counted)) {
    my $k = counters($id);
    is($k->{spend_micros}, 2_000_000, "$id: charged exactly once") or diag explain $k;
    is($k->{spend_today_micros}, 2_000_000, "$id: today as well");
    is($k->{value_micros}, 10_000_000, "$id: its value counted once");
}
is(counters('clk')->{spend_micros}, 500_000, 'clk: charged exactly once');
is(counters('clk')->{clicks_today}, 1, 'clk: one click charged today');

# 4. An event too large for the ring (dropped_too_large) is answered as usual, not charged, and
#    its key is not recorded.
my $too_large = ring_header()->{dropped_too_large_total};
is($c->get('/cvbig?cid=big&t=big-1&click_id=D&x=' . ('z' x 1000))->{status}, 204, 'a 20k conversion: 204');
is(ring_header()->{dropped_too_large_total}, $too_large + 1, 'dropped as too large');
is(counters('big')->{spend_micros}, 0, 'big: not charged');
is($c->get('/cvbig?cid=big&t=big-2&click_id=D&x=small')->{status}, 204, 'the same conversion, smaller: 204');
is(counters('big')->{spend_micros}, 2_000_000, 'big: charged once, for the stored one');

$c->close;
$ngx->stop;
my $events = drain();

for my $t (qw(plain-2 flagged-2 counted-2 clk-2 big-2)) {
    my $e = one_tagged($events, $t);
    ok($e, "$t: stored once") or next;
    is_deeply(flags_of($e), [], "$t: no flag (not a duplicate)");
    is($e->{cost_micros}, $t eq 'clk-2' ? 500_000 : 2_000_000, "$t: carries its charge");
}
my $third = one_tagged($events, 'flagged-3');
ok($third && has_flag($third, 'duplicate'), 'the attempt after the stored one: duplicate');
ok($third && !defined $third->{cost_micros}, 'and not charged');
is(scalar(grep { (dim($_, 't') // '') =~ /-1$/ } @$events), 0, 'none of the dropped events came out');

done_testing();
