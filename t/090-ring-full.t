# A full ring (64k, no shipper running): pixels and clicks keep their usual answers, every
# event that did not fit is counted as dropped_full for its kind; tracker_ring_full 503 answers
# 503 instead; written + dropped_full = requests (ring header and `tracker-shipper stats`);
# after a drain the ring takes events again.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;

my $FILL = 1000;
my $PAD = 'p' x 200;
my $BIGPAD = 'q' x 260;    # larger events than the fill: they cannot fit in what is left

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/s?k={click_id}' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 1, log_level => 'warn', http => <<'HTTP');
    tracker_ring      @RING@ 64k;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    server {
        listen @LISTEN@;
        keepalive_requests 100000;
        tracker_dimension t   $arg_t;
        tracker_dimension pad $arg_pad;
        location = /i    { tracker impression; }
        location = /i503 { tracker impression; tracker_ring_full 503; }
        location = /c    { tracker click; }
        location = /c503 { tracker click; tracker_ring_full 503; }
        location = /big {
            tracker impression;
            tracker_ring_full 503;
            tracker_dimension d1 $arg_x;  tracker_dimension d2 $arg_x;  tracker_dimension d3 $arg_x;
            tracker_dimension d4 $arg_x;  tracker_dimension d5 $arg_x;  tracker_dimension d6 $arg_x;
            tracker_dimension d7 $arg_x;  tracker_dimension d8 $arg_x;  tracker_dimension d9 $arg_x;
            tracker_dimension d10 $arg_x; tracker_dimension d11 $arg_x; tracker_dimension d12 $arg_x;
            tracker_dimension d13 $arg_x; tracker_dimension d14 $arg_x; tracker_dimension d15 $arg_x;
            tracker_dimension d16 $arg_x; tracker_dimension d17 $arg_x; tracker_dimension d18 $arg_x;
            tracker_dimension d19 $arg_x; tracker_dimension d20 $arg_x;
        }
    }
HTTP
$ngx->start;
my $c = $ngx->client;

my (%answers, %last);
sub fire {
    my ($path, $query, $n) = @_;
    my %st;
    for (1 .. $n) {
        my $r = $c->get("$path?cid=summer&$query");
        my $code = $r->{status};
        my $s = $code;
        $s .= ' badgif' if $code == 200 && $r->{body} ne gif_bytes();
        $s .= ' nolocation' if $code == 302 && ($r->{headers}{location} // '') !~ m{^https://shop\.example\.com/s\?k=[0-9a-f]{32}$};
        $st{$s}++;
        $last{$code} = $r;
    }
    $answers{$path} += $n;
    return \%st;
}

# 1. Fill the ring through the default "serve" location.
is_deeply(fire('/i', "t=fill&pad=$PAD", $FILL), { 200 => $FILL }, "$FILL pixels: all 200 with the GIF");
my $h = ring_header();
ok($h->{dropped_full}[0] > 0, "the ring filled up: $h->{dropped_full}[0] impressions dropped");
ok($h->{written}[0] > 0, "$h->{written}[0] impressions written");
is($h->{written}[0] + $h->{dropped_full}[0], $FILL, 'written + dropped_full = requests');
cmp_ok($h->{written}[0], '<', 65536 / 200, 'no more written than 64k can hold');

# 2. Still full: clicks keep redirecting, tracker_ring_full 503 answers 503.
is_deeply(fire('/c', "t=fullc&pad=$BIGPAD", 10), { 302 => 10 }, 'clicks on a full ring: still 302 to the landing URL');
is_deeply(fire('/i503', "t=f503&pad=$BIGPAD", 20), { 503 => 20 }, 'tracker_ring_full 503: pixels get 503');
is_deeply(fire('/c503', "t=c503&pad=$BIGPAD", 5), { 503 => 5 }, 'tracker_ring_full 503: clicks get 503');
is($last{503} && $last{503}{headers}{'cache-control'}, 'no-store, no-cache, must-revalidate, max-age=0',
   'the 503 forbids caching too ("every answer")');
is_deeply(fire('/i', "t=more&pad=$BIGPAD", 10), { 200 => 10 }, 'the serve location still answers 200');

$h = ring_header();
is($h->{dropped_full}[0], $FILL - $h->{written}[0] + 30, 'impressions: every refused event counted');
is($h->{dropped_full}[1], 15, 'clicks: 15 dropped');
is($h->{written_total} + $h->{dropped_full_total}, $FILL + 45, 'written + dropped_full = all requests');

my $s = eval { shipper_stats() };
ok($s, 'tracker-shipper stats') or diag $@;
if ($s) {
    ok($s->{dropped_full_total} > 0, "shipper stats: dropped_full $s->{dropped_full_total}");
    is($s->{written_total} + $s->{dropped_full_total}, $FILL + 45, 'shipper stats: written + dropped = requests');
    is_deeply($s->{dropped_full}, $h->{dropped_full}, 'shipper stats = ring header (dropped_full)');
}

# 3. Drain: exactly the written events come out, and the ring takes events again.
my $events = drain();
is(scalar @$events, $h->{written_total}, 'the drain returns every written event');
is(scalar(grep { (dim($_, 't') // '') ne 'fill' } @$events), 0, 'all of them from the fill (nothing fitted once full)');
is_deeply(fire('/i503', 't=after', 3), { 200 => 3 }, 'after the drain, tracker_ring_full 503 locations answer 200 again');
is_deeply(fire('/c503', 't=afterc', 1), { 302 => 1 }, 'and clicks 302');

# 4. An event larger than a quarter of the ring can never fit: counted as dropped_too_large,
#    the answer is the usual one.
is_deeply(fire('/big', 'x=' . ('z' x 1000), 1), { 200 => 1 }, 'a 20k event on a 64k ring: still 200 GIF');
$h = ring_header();
is($h->{dropped_too_large}[0], 1, 'counted as dropped_too_large');
$c->close;
$ngx->stop;
my $after = drain();
is(scalar @$after, 4, 'the events after the drain are stored, not the too large one');

$h = ring_header();
my $req = 0;
$req += $_ for values %answers;
is($h->{written_total} + $h->{dropped_full_total} + $h->{dropped_too_large_total}, $req,
   "in all: written + dropped_full + dropped_too_large = $req requests");

done_testing();
