# Duplicates (`tracker_duplicates_zone`, `tracker_duplicates flag|count|off [window=]`,
# `tracker_duplicates_key`): a conversion repeated for the same click id, or a click repeated
# with the same key within the window, is stored with the `duplicate` flag (or only counted)
# and never charged; a click still goes to its landing URL. The set is shared by the workers
# (one of many concurrent identical postbacks is the first), expires with the window (test
# clock), survives a reload, and its misuse fails `nginx -t`.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use POSIX ();

write_campaigns([
    { id => 'paid', status => 'active', landing_url => 'https://shop.example.com/l',
      price_per_click => 0.5, price_per_conversion => 2 },
]);

my $ngx = TrackerTest::Nginx->new(workers => 2, log_level => 'warn', http => <<'HTTP');
    tracker_ring      @RING@ 4m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    tracker_duplicates_zone 1m window=1h;
    server {
        listen @LISTEN@;
        keepalive_requests 10000;
        tracker_dimension t   $arg_t;
        tracker_dimension pub $arg_pub;
        location = /cv    { tracker conversion response=empty; tracker_duplicates flag; }
        location = /cvc   { tracker conversion response=empty; tracker_duplicates count; }
        location = /cvoff { tracker conversion response=empty; }
        location = /c     { tracker click; tracker_duplicates flag window=10s; }
        location = /ck    { tracker click; tracker_duplicates flag; tracker_duplicates_key $arg_pub; }
        location = /stats { tracker_stats; }
        location /tracker/campaigns { tracker_admin test_clock; }
    }
HTTP
$ngx->start;

sub get { my ($uri) = @_; return $ngx->get($uri) }

# Conversions keyed by their click id.
is(get('/cv?cid=paid&t=cv-a1&click_id=A')->{status}, 204, 'conversion A');
is(get('/cv?cid=paid&t=cv-a2&click_id=A')->{status}, 204, 'conversion A again: same answer');
is(get('/cv?cid=paid&t=cv-b1&click_id=B')->{status}, 204, 'conversion B');
is(get('/cv?cid=paid&t=cv-none1')->{status}, 204, 'a conversion without a click id');
is(get('/cv?cid=paid&t=cv-none2')->{status}, 204, 'and another: nothing to key on');
is(get('/cvc?cid=paid&t=cvc-1&click_id=C')->{status}, 204, 'count: conversion C');
is(get('/cvc?cid=paid&t=cvc-2&click_id=C')->{status}, 204, 'count: conversion C again');
is(get('/cvoff?cid=paid&t=off-1&click_id=D')->{status}, 204, 'off: conversion D');
is(get('/cvoff?cid=paid&t=off-2&click_id=D')->{status}, 204, 'off: conversion D again');

# Clicks keyed by the client address and the dimensions (here t differs, so pub is the key only
# through tracker_duplicates_key in /ck; /c uses the same t on purpose).
my $c1 = get('/c?cid=paid&t=click&pub=p1');
my $c2 = get('/c?cid=paid&t=click&pub=p1');
my $c3 = get('/c?cid=paid&t=click&pub=p2');
is($c1->{status}, 302, 'click 1: 302');
is($c2->{status}, 302, 'click 1 again: still 302');
is($c2->{headers}{location}, 'https://shop.example.com/l', 'a duplicate click still goes to the landing URL');
is($c3->{status}, 302, 'another publisher: 302');
get('/ck?cid=paid&t=ck-1&pub=k');
get('/ck?cid=paid&t=ck-2&pub=k');

# Many workers, many connections, the same postback at once: exactly one is first.
my @kids;
for my $k (1 .. 4) {
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        my $cl = $ngx->client;
        $cl->get("/cv?cid=paid&t=race&click_id=RACE") for 1 .. 25;
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;

# The window: 11 s later (test clock) the 10 s click window is over, the 1 h conversion one not.
my $r = $ngx->client->request('PUT', '/tracker/campaigns/_clock', body => '{"offset_seconds": 11}',
                              headers => { 'Content-Type' => 'application/json' });
is($r->{status}, 200, 'test clock moved 11 s') or diag $r->{body};
get('/c?cid=paid&t=click-later&pub=p1');    # t differs: a new key anyway
get('/c?cid=paid&t=click&pub=p1');
get('/cv?cid=paid&t=cv-a3&click_id=A');

# A reload keeps the set: both requests after it go to new workers only (the old ones are
# gone), which must still see click id A.
my %old = map { $_ => 1 } @{ $ngx->worker_pids };
$ngx->reload;
SKIP: {
    # Under valgrind (scripts/valgrind.sh) nginx cannot set the workers' process titles, by
    # which worker_pids finds them: wait instead.
    if (!%old) {
        sleep 3;
        skip 'workers not identifiable by their title (valgrind)', 1;
    }
    my $renewed = TrackerTest::wait_until(15, sub {
        my $w = $ngx->worker_pids;
        return @$w == 2 && !grep { $old{$_} } @$w;
    });
    ok($renewed, 'the reload replaced both workers');
}
my $after = get('/cv?cid=paid&t=cv-a-reload&click_id=A');
get('/cv?cid=paid&t=cv-a-reload2&click_id=A');

my $h = ring_header();
my $events = drain();
sub flags_for { my $e = one_tagged($events, shift); return $e ? flags_of($e) : ['(no single event)'] }

subtest 'conversions: the same click id is a duplicate, flagged and not charged' => sub {
    my $first = one_tagged($events, 'cv-a1') or return fail('no first conversion');
    is_deeply(flags_of($first), [], 'the first: no flag');
    is($first->{cost_micros}, 2_000_000, 'the first is charged 2');
    my $dup = one_tagged($events, 'cv-a2') or return fail('no second conversion');
    is_deeply(flags_of($dup), ['duplicate'], 'the second: flag duplicate');
    ok(!defined $dup->{cost_micros}, 'and not charged');
    is_deeply(flags_for('cv-b1'), [], 'another click id: no flag');
    is_deeply(flags_for('cv-none1'), [], 'no click id: not checked');
    is_deeply(flags_for('cv-none2'), [], 'no click id: not checked, again');
    is_deeply(flags_for('cv-a3'), ['duplicate'], '11 s later, within the 1 h window: duplicate');
};

subtest 'count: the duplicate is not stored' => sub {
    is_deeply(flags_for('cvc-1'), [], 'the first is stored');
    is(scalar @{ events_tagged($events, 'cvc-2') }, 0, 'the duplicate is not');
};

subtest 'off: not checked' => sub {
    is_deeply(flags_for('off-1'), [], 'first');
    is_deeply(flags_for('off-2'), [], 'second: no flag either');
};

subtest 'clicks: the client address and dimensions, or tracker_duplicates_key' => sub {
    my @c = sort { $a->{ts} <=> $b->{ts} } grep { dim($_, 'pub') eq 'p1' } @{ events_tagged($events, 'click') };
    is(scalar @c, 3, 'three clicks with t=click and pub=p1');
    is_deeply(flags_of($c[0]), [], 'the first: no flag');
    is($c[0]{cost_micros}, 500_000, 'and charged');
    is_deeply(flags_of($c[1]), ['duplicate'], 'the second at once: duplicate');
    ok(!defined $c[1]{cost_micros}, 'not charged');
    is_deeply(flags_of($c[2]), [], 'the third, 11 s later (window 10 s): not a duplicate');
    my ($p2) = grep { dim($_, 'pub') eq 'p2' } @{ events_tagged($events, 'click') };
    is_deeply($p2 && flags_of($p2), [], 'another publisher: no flag');
    is_deeply(flags_for('click-later'), [], 'another dimension value: no flag');
    is_deeply(flags_for('ck-1'), [], 'tracker_duplicates_key: first');
    is_deeply(flags_for('ck-2'), ['duplicate'], 'tracker_duplicates_key: the same key, different t: duplicate');
};

subtest 'concurrent identical postbacks over two workers: exactly one first' => sub {
    my $race = events_tagged($events, 'race');
    is(scalar @$race, 100, '100 stored');
    my @first = grep { !has_flag($_, 'duplicate') } @$race;
    is(scalar @first, 1, 'exactly one without the duplicate flag');
    is(scalar(grep { defined $_->{cost_micros} } @$race), 1, 'exactly one charged');
};

subtest 'a reload keeps the set' => sub {
    is($after && $after->{status}, 204, 'answered after the reload');
    is_deeply(flags_for('cv-a-reload'), ['duplicate'], 'click id A is still a duplicate for the new workers');
    is_deeply(flags_for('cv-a-reload2'), ['duplicate'], 'and again');
};

subtest 'counters' => sub {
    # conversion: cv-a2, cv-a3, cvc-2, 99 of the race, two after the reload (104); click: one at /c, ck-2.
    is($h->{duplicates}[2], 104, 'ring header: 104 duplicate conversions');
    is($h->{duplicates}[1], 2, 'ring header: 2 duplicate clicks');
    is($h->{rejected_total}, 0, 'duplicates are not counted as rejected');
    my $s = eval { shipper_stats() };
    is_deeply($s && $s->{duplicates}, $h->{duplicates}, 'tracker-shipper stats: the same');
    my $p = $ngx->get('/stats?format=prometheus')->{body};
    like($p, qr/^tracker_ring_events_duplicate_total\{type="conversion"\} 104$/m, 'prometheus: conversions');
    like($p, qr/^tracker_duplicate_evictions_total 0$/m, 'prometheus: no eviction');
    unlike($ngx->error_log_text, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg in the error log');
};

subtest 'directive errors' => sub {
    my %bad = (
        'tracker_duplicates maybe;'             => qr/invalid value "maybe" in "tracker_duplicates" directive/,
        'tracker_duplicates flag window=0s;'    => qr/invalid window "0s" in "tracker_duplicates" directive/,
        'tracker_duplicates flag window=8d;'    => qr/invalid window "8d" in "tracker_duplicates" directive/,
        'tracker_duplicates flag size=1;'       => qr/invalid parameter "size=1" in "tracker_duplicates" directive/,
        'tracker_duplicates flag;'              => qr/"tracker_duplicates" is used at .* but no "tracker_duplicates_zone" is configured/,
        'tracker_duplicates off; tracker_duplicates flag;' => qr/"tracker_duplicates" directive is duplicate/,
        'tracker_duplicates_key $arg_a; tracker_duplicates_key $arg_b;' => qr/"tracker_duplicates_key" directive is duplicate/,
    );
    location_directives_refused(\%bad);
    for my $z (['tracker_duplicates_zone 1k;', qr/at least 64k/], ['tracker_duplicates_zone 1m window=x;', qr/invalid window "x"/],
               ['tracker_duplicates_zone lots;', qr/invalid size "lots"/]) {
        my $n = TrackerTest::Nginx->new(http => <<"HTTP");
    tracker_ring \@RING\@ 4m;
    $z->[0]
    server { listen \@LISTEN\@; location = /i { tracker impression; } }
HTTP
        my ($rc, $out) = $n->test_conf;
        isnt($rc, 0, "$z->[0]: nginx -t fails");
        like($out, $z->[1], "$z->[0]: message");
    }
    my $ok = TrackerTest::Nginx->new(http => <<'HTTP');
    tracker_ring @RING@ 4m;
    tracker_duplicates_zone 64k;
    tracker_duplicates flag;
    server {
        listen @LISTEN@;
        tracker_duplicates count window=7d;
        location = /i { tracker impression; tracker_duplicates off; }
        location = /c { tracker click; tracker_duplicates_key $binary_remote_addr$arg_pub; }
    }
HTTP
    my ($rc, $out) = $ok->test_conf;
    is($rc, 0, 'all levels accepted') or diag($out);
};

subtest 'nginx-conf/example.conf passes nginx -t' => sub {
    my $conf = read_file("$TrackerTest::ROOT/nginx-conf/example.conf") // '';
    my ($http) = $conf =~ /^http \{\n(.*)^\}/ms or return fail('no http block in example.conf');
    $http =~ s{/dev/shm/nginx-tracker\.ring \S+;}{\@RING\@ 4m;};
    $http =~ s{/etc/nginx/campaigns\.json}{\@CAMPAIGNS\@};
    $http =~ s{listen 80;}{listen \@LISTEN\@;};
    my ($rc, $out) = TrackerTest::Nginx->new(http => $http)->test_conf;
    is($rc, 0, 'accepted') or diag($out);
};

done_testing();
