# The banker: budgets enforced across workers. 400 clicks on 16 connections over 2 workers
# race for a budget of 40 clicks: exactly 40 are charged and sent to the landing URL, the other
# 360 go to the campaign's fallback URL flagged over_budget, and the charged events sum exactly
# to the budget. Also: impression caps (GIF always served), conversion pricing with a revenue
# share, schedules, allowed publishers, paused campaigns, the day rolling over (test clock of
# the admin API) and a cap raised through the admin API, and the counters the admin API shows.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use POSIX ();

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $CONNS = 16;
my $PER_CONN = 25;

write_campaigns([
    { id => 'capped', status => 'active', landing_url => 'https://shop.example.com/l?k={click_id}',
      fallback_url => 'https://shop.example.com/sorry?c={campaign}',
      price_per_click => 0.25, daily_budget => 10, daily_clicks => 1000 },
    { id => 'imps', status => 'active', landing_url => 'https://shop.example.com/i',
      price_per_mille => 2, total_impressions => 100 },
    { id => 'conv', status => 'active', landing_url => 'https://shop.example.com/c',
      price_per_conversion => 1, revenue_share => 0.1 },
    { id => 'later', status => 'active', landing_url => 'https://shop.example.com/later',
      start => '2100-01-01T00:00:00Z' },
    { id => 'pubs', status => 'active', landing_url => 'https://shop.example.com/p',
      publishers => ['good-pub'] },
    { id => 'paused', status => 'paused', landing_url => 'https://shop.example.com/x',
      fallback_url => 'https://shop.example.com/paused' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 2, log_level => 'warn', http => <<'HTTP');
    tracker_ring      @RING@ 8m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    server {
        listen @LISTEN@ reuseport;
        keepalive_requests 10000;
        tracker_dimension publisher $arg_pub;
        tracker_dimension tag $arg_tag;
        tracker_fallback_url "https://fallback.example.com/?c={campaign}";
        location = /i  { tracker impression; }
        location = /c  { tracker click; }
        location = /cv { tracker conversion; }
        location /tracker/campaigns { tracker_admin test_clock; }
    }
HTTP
$ngx->start;
is(scalar @{ $ngx->worker_pids }, 2, 'two workers');

sub location_of { my $r = shift; return $r->{headers}{location} // '' }

# --- 400 clicks race for 40 ----------------------------------------------------------------------
my @kids;
for my $conn (1 .. $CONNS) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my %seen;
        my $c = $ngx->client;
        for my $n (1 .. $PER_CONN) {
            my $r = eval { $c->get("/c?cid=capped&tag=race") };
            my $where = !$r ? 'error'
                : $r->{status} != 302 ? "status $r->{status}"
                : location_of($r) =~ m{^https://shop\.example\.com/l\?k=[0-9a-f]{32}$} ? 'landing'
                : location_of($r) eq 'https://shop.example.com/sorry?c=capped' ? 'fallback'
                : 'other ' . location_of($r);
            $seen{$where}++;
        }
        $c->close;
        write_file("$WORK/race.$conn", join('', map { "$_\t$seen{$_}\n" } sort keys %seen));
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;
my %where;
for my $conn (1 .. $CONNS) {
    for my $line (@{ read_log("$WORK/race.$conn") }) {
        my ($w, $n) = split /\t/, $line;
        $where{$w} += $n;
    }
}
is_deeply(\%where, { landing => 40, fallback => 360 },
          '400 racing clicks: 40 to the landing URL (10.00 / 0.25), 360 to the fallback') or diag explain \%where;

# --- impressions: cap of 100, the GIF always ---------------------------------------------------
my $gif_ok = 0;
for (1 .. 150) {
    my $r = $ngx->get("/i?cid=imps&tag=imps");
    $gif_ok++ if $r->{status} == 200 && $r->{body} eq gif_bytes();
}
is($gif_ok, 150, '150 impressions all get the GIF, over budget or not');

# --- conversions: price + revenue share ---------------------------------------------------------
is($ngx->get('/cv?cid=conv&value=20&tag=conv')->{status}, 200, 'a conversion');

# --- schedule, publishers, paused -------------------------------------------------------------
my $r = $ngx->get('/c?cid=later&tag=later');
is(location_of($r), 'https://fallback.example.com/?c=later', 'before its start: the location fallback');
is(location_of($ngx->get('/c?cid=pubs&pub=good-pub&tag=pub-good')), 'https://shop.example.com/p', 'an allowed publisher: the landing URL');
is(location_of($ngx->get('/c?cid=pubs&pub=other&tag=pub-bad')), 'https://fallback.example.com/?c=pubs', 'another publisher: the fallback');
is(location_of($ngx->get('/c?cid=paused&tag=paused')), 'https://shop.example.com/paused', 'paused: the campaign fallback first');

# --- the admin API shows the counters ----------------------------------------------------------
sub counters {
    my $id = shift;
    my $r = $ngx->get("/tracker/campaigns/$id");
    return {} unless $r->{status} == 200;
    my $j = eval { JSON::PP::decode_json($r->{body}) } || {};
    return $j->{counters} || {};
}
require JSON::PP;
my $k = counters('capped');
is($k->{clicks}, 400, 'admin API: 400 clicks seen');
is($k->{spend_micros}, 10_000_000, 'admin API: spend exactly the daily budget');
is($k->{over_budget}, 360, 'admin API: 360 over budget');
$k = counters('imps');
is($k->{spend_micros}, 100 * 2000, 'impressions: 100 charged at 2.00 per mille');

# --- the day rolls over (test clock): clicks are charged again ----------------------------------
$r = $ngx->client->request('PUT', '/tracker/campaigns/_clock', body => '{"offset_seconds": 86400}',
                          headers => { 'Content-Type' => 'application/json' });
is($r->{status}, 200, 'test clock moved a day ahead') or diag $r->{body};
like(location_of($ngx->get('/c?cid=capped&tag=next-day')), qr{^https://shop\.example\.com/l\?k=}, 'next day: the landing URL again');
is(counters('capped')->{spend_today_micros}, 250_000, 'next day: one click charged today');

# --- raising the cap resumes the same day ---------------------------------------------------------
for (1 .. 39) { $ngx->get('/c?cid=capped&tag=fill') }
is(location_of($ngx->get('/c?cid=capped&tag=full-again')), 'https://shop.example.com/sorry?c=capped', 'capped again');
$r = $ngx->client->request('PUT', '/tracker/campaigns/capped', headers => { 'Content-Type' => 'application/json' },
    body => JSON::PP::encode_json({ id => 'capped', status => 'active', landing_url => 'https://shop.example.com/l?k={click_id}',
        fallback_url => 'https://shop.example.com/sorry?c={campaign}', price_per_click => 0.25, daily_budget => 20, daily_clicks => 1000 }));
is($r->{status}, 200, 'admin API: daily budget raised to 20') or diag $r->{body};
like(location_of($ngx->get('/c?cid=capped&tag=raised')), qr{^https://shop\.example\.com/l\?k=}, 'after the raise: the landing URL');

$ngx->stop;

# --- the events ------------------------------------------------------------------------------
my $events = drain();
my %by_tag;
push @{ $by_tag{ dim($_, 'tag') // '' } }, $_ for @$events;

my @race = @{ $by_tag{race} || [] };
is(scalar @race, 400, '400 click events stored');
my @charged = grep { !has_flag($_, 'over_budget') } @race;
is(scalar @charged, 40, '40 charged');
is((grep { ($_->{cost_micros} // 0) == 250_000 } @charged), 40, 'each charged click cost 0.25');
is((grep { !defined $_->{cost_micros} && has_flag($_, 'over_budget') } @race), 360, '360 over budget, no cost');
my $sum = 0;
$sum += $_->{cost_micros} // 0 for @race;
is($sum, 10_000_000, 'the charged clicks sum exactly to the budget');

my @imps = @{ $by_tag{imps} || [] };
is(scalar(grep { !has_flag($_, 'over_budget') && ($_->{cost_micros} // 0) == 2000 } @imps), 100, '100 impressions charged');
is(scalar(grep { has_flag($_, 'over_budget') } @imps), 50, '50 impressions over budget');

is($by_tag{conv}[0]{cost_micros}, 3_000_000, 'conversion: 1.00 + 10% of 20.00');
ok(has_flag($by_tag{later}[0], 'outside_schedule'), 'outside_schedule flagged');
ok(!defined $by_tag{later}[0]{cost_micros}, 'outside_schedule not charged');
ok(has_flag($by_tag{'pub-bad'}[0], 'publisher_not_allowed'), 'publisher_not_allowed flagged');
ok(!has_flag($by_tag{'pub-good'}[0], 'publisher_not_allowed'), 'an allowed publisher is not flagged');
ok(has_flag($by_tag{paused}[0], 'inactive_campaign'), 'paused: inactive_campaign');
is($by_tag{'next-day'}[0]{cost_micros}, 250_000, 'next day: charged');
ok(has_flag($by_tag{'full-again'}[0], 'over_budget'), 'capped again: over_budget');
is($by_tag{raised}[0]{cost_micros}, 250_000, 'after the raise: charged');

done_testing();
