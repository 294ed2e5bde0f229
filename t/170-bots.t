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
        location = /cv     { tracker conversion; }
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

my $IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1';
my $IPAD = 'Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/16.6 Mobile/15E148 Safari/604.1';
my $EDGE = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91';
my $ANDROID = 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36';
get('/i?cid=free&t=ua-iphone', 'User-Agent' => $IPHONE);
get('/i?cid=free&t=ua-ipad', 'User-Agent' => $IPAD);
get('/i?cid=free&t=ua-edge', 'User-Agent' => $EDGE);
get('/i?cid=free&t=ua-android', 'User-Agent' => $ANDROID);
get('/i?cid=free&t=ua-android2', 'User-Agent' => $ANDROID);    # from the worker's cache
get('/i?cid=free&t=ua-dnt', 'User-Agent' => $IPHONE, 'DNT' => '1');
get('/cv?cid=free&t=ua-conversion&click_id=k', 'User-Agent' => $IPHONE);

my $events = drain();

subtest 'User-Agent families: browser, os, device' => sub {
    my %want = (
        browser      => [qw(firefox linux desktop)],
        'ua-iphone'  => [qw(safari ios mobile)],
        'ua-ipad'    => [qw(safari ios tablet)],
        'ua-edge'    => [qw(edge windows desktop)],
        'ua-android' => [qw(chrome android mobile)],
        'ua-android2' => [qw(chrome android mobile)],
        googlebot    => [qw(other other bot)],
        noua         => [qw(other other bot)],
    );
    for my $t (sort keys %want) {
        my $e = one_tagged($events, $t) or do { fail("$t: one event"); next };
        is_deeply([ map { $e->{$_} } qw(browser os device) ], $want{$t}, "$t: @{ $want{$t} }");
    }
    my $dnt = one_tagged($events, 'ua-dnt');
    ok($dnt && !defined $dnt->{ua}, 'DNT: no User-Agent');
    is_deeply($dnt && [ map { $dnt->{$_} } qw(browser os device) ], [qw(safari ios mobile)], 'DNT: the families are kept');
    my $cv = one_tagged($events, 'ua-conversion');
    ok($cv && !exists $cv->{browser} && !exists $cv->{os} && !exists $cv->{device}, 'a conversion (postback) is not classified');
};

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
