# Bots and prefetches (`tracker_bots flag | count | off`): a crawler, tool or empty
# User-Agent is flagged bot, a `Sec-Purpose: prefetch` request prefetch; neither is charged by
# the banker; `count` stores nothing but answers as usual; `off` classifies nothing.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;

write_campaigns([
    { id => 'paid', status => 'active', landing_url => 'https://shop.example.com/l',
      price_per_click => 0.5 },
    { id => 'free', status => 'active', landing_url => 'https://shop.example.com/f' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 1, log_level => 'warn', http => <<'HTTP');
    tracker_ring      @RING@ 4m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    server {
        listen @LISTEN@;
        tracker_dimension t $arg_t;
        location = /i      { tracker impression; }
        location = /c      { tracker click; }
        location = /icount { tracker impression; tracker_bots count; }
        location = /ccount { tracker click; tracker_bots count; }
        location = /ioff   { tracker impression; tracker_bots off; }
    }
HTTP
$ngx->start;

my $BROWSER = 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0';
my $GOOGLEBOT = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)';
sub get { my ($uri, %h) = @_; return $ngx->get($uri, headers => { 'User-Agent' => undef, %h }) }

is(get('/i?cid=free&t=browser', 'User-Agent' => $BROWSER)->{status}, 200, 'browser impression');
is(get('/i?cid=free&t=googlebot', 'User-Agent' => $GOOGLEBOT)->{status}, 200, 'googlebot impression');
is(get('/i?cid=free&t=curl', 'User-Agent' => 'curl/8.5.0')->{status}, 200, 'curl impression');
is(get('/i?cid=free&t=noua')->{status}, 200, 'impression without a User-Agent');
is(get('/i?cid=free&t=prefetch', 'User-Agent' => $BROWSER, 'Sec-Purpose' => 'prefetch')->{status}, 200, 'prefetch impression');
is(get('/i?cid=free&t=prerender', 'User-Agent' => $BROWSER, 'Sec-Purpose' => 'prefetch;prerender')->{status}, 200,
   'prerender impression');

my $bc = get('/c?cid=paid&t=bot-click', 'User-Agent' => $GOOGLEBOT);
is($bc->{status}, 302, 'a bot click is redirected');
is($bc->{headers}{location}, 'https://shop.example.com/l', 'to the landing URL');
my $hc = get('/c?cid=paid&t=human-click', 'User-Agent' => $BROWSER);
is($hc->{status}, 302, 'a browser click is redirected');
my $pc = get('/c?cid=paid&t=prefetch-click', 'User-Agent' => $BROWSER, 'Purpose' => 'prefetch');
is($pc->{status}, 302, 'a prefetched click is redirected');

my $ci = get('/icount?cid=free&t=count-bot', 'User-Agent' => $GOOGLEBOT);
is($ci->{status}, 200, 'count: the bot gets the GIF');
is($ci->{body}, gif_bytes(), 'the GIF itself');
my $cc = get('/ccount?cid=paid&t=count-click', 'User-Agent' => 'curl/8.5.0');
is($cc->{status}, 302, 'count: the bot click is redirected');
is($cc->{headers}{location}, 'https://shop.example.com/l', 'to the landing URL');
get('/icount?cid=free&t=count-human', 'User-Agent' => $BROWSER);

get('/ioff?cid=free&t=off-bot', 'User-Agent' => $GOOGLEBOT);
get('/ioff?cid=free&t=off-noua');
get('/ioff?cid=free&t=off-prefetch', 'User-Agent' => $BROWSER, 'Sec-Purpose' => 'prefetch');

my $events = drain();

subtest 'flag (the default): bots and prefetches are flagged' => sub {
    for my $t (qw(googlebot curl noua)) {
        my $e = one_tagged($events, $t) or return fail("no $t event");
        ok(has_flag($e, 'bot'), "$t: flag bot");
        ok(!has_flag($e, 'prefetch'), "$t: no flag prefetch");
    }
    my $b = one_tagged($events, 'browser') or return fail('no browser event');
    is_deeply(flags_of($b), [], 'a browser: no flag');
    for my $t (qw(prefetch prerender)) {
        my $e = one_tagged($events, $t) or return fail("no $t event");
        is_deeply(flags_of($e), ['prefetch'], "$t: flag prefetch only");
    }
};

subtest 'bots and prefetches are not charged' => sub {
    my $bot = one_tagged($events, 'bot-click') or return fail('no bot click');
    ok(has_flag($bot, 'bot'), 'the bot click is flagged bot');
    ok(!defined $bot->{cost_micros}, 'and has no cost_micros');
    my $human = one_tagged($events, 'human-click') or return fail('no browser click');
    is($human->{cost_micros}, 500000, 'a browser click costs 0.5');
    my $pre = one_tagged($events, 'prefetch-click') or return fail('no prefetched click');
    ok(has_flag($pre, 'prefetch'), 'the prefetched click is flagged prefetch');
    ok(!defined $pre->{cost_micros}, 'and has no cost_micros');
};

subtest 'count: nothing stored, the rest is' => sub {
    is(scalar(@{ events_tagged($events, 'count-bot') }), 0, 'no event for a counted bot impression');
    is(scalar(@{ events_tagged($events, 'count-click') }), 0, 'no event for a counted bot click');
    ok(one_tagged($events, 'count-human'), 'a browser in a count location is stored');
};

subtest 'off: nothing flagged' => sub {
    for my $t (qw(off-bot off-noua off-prefetch)) {
        my $e = one_tagged($events, $t) or return fail("no $t event");
        is_deeply(flags_of($e), [], "$t: no flag");
    }
};

subtest 'directive errors' => sub {
    my %bad = (
        'tracker_bots maybe;'           => qr/invalid value "maybe" in "tracker_bots" directive/,
        'tracker_bots flag; tracker_bots off;' => qr/"tracker_bots" directive is duplicate/,
    );
    location_directives_refused(\%bad);
    my $ok = TrackerTest::Nginx->new(http => <<'HTTP');
    tracker_ring @RING@ 4m;
    tracker_bots count;
    server {
        listen @LISTEN@;
        tracker_bots off;
        location = /i { tracker impression; tracker_bots flag; }
    }
HTTP
    my ($rc, $out) = $ok->test_conf;
    is($rc, 0, 'all levels accepted') or diag($out);
};

done_testing();
