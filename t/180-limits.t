# Bad input (`tracker_limits`, `tracker_invalid reject`, the default): a request over a limit or
# with invalid input is never stored; a click or a postback gets 400, a pixel the GIF, a body
# over the limit 413; each refusal is counted by its reason in the ring header, the stats and
# `tracker-shipper stats`. Values exactly at a limit pass. Bad directive values fail `nginx -t`.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/l?c={click_id}' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 1, log_level => 'info', http => <<'HTTP');
    tracker_ring      @RING@ 4m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    server {
        listen @LISTEN@;
        tracker_dimension t   $arg_t;
        tracker_dimension pub $arg_pub;
        location = /i  { tracker impression; }
        location = /c  { tracker click; }
        location = /v  { tracker video; }
        location = /pb { tracker conversion response=empty; }
        location = /small {
            tracker impression;
            tracker_limits query=100 args=3 value=10;
        }
        location = /smallpb {
            tracker conversion response=empty;
            tracker_limits body=1k;
        }
        location = /stats { tracker_stats; }
    }
HTTP
$ngx->start;

my $gif = gif_bytes();
my %want;    # reason => refusals expected
sub refused_gif {
    my ($uri, $reason, $name) = @_;
    my $r = $ngx->get($uri);
    is($r->{status}, 200, "$name: 200");
    is($r->{body}, $gif, "$name: the GIF");
    $want{$reason}++;
}
sub refused_status {
    my ($method, $uri, $status, $reason, $name, %o) = @_;
    my $r = $ngx->client->request($method, $uri, %o);
    is($r->{status}, $status, "$name: $status");
    ok(!$r->{headers}{location}, "$name: no Location");
    $want{$reason}++;
}

my $long = 'x' x 1025;
# Pixels: the GIF whatever is wrong.
refused_gif('/i?cid=../x&t=bad-cid', 'invalid_campaign', 'impression with ../x as campaign');
refused_gif('/i?t=no-cid', 'invalid_campaign', 'impression without a campaign');
refused_gif("/i?cid=summer&t=long-pub&pub=$long", 'value_too_long', 'impression with a 1025-byte value');
refused_gif('/v?cid=summer&t=bad-video&event=bogus', 'invalid_video_event', 'video event bogus');
refused_gif('/v?cid=summer&t=bad-watch&event=q1&watch_time=abc', 'invalid_value', 'watch_time abc');
refused_gif('/small?cid=summer&t=q&pad=' . ('p' x 100), 'query_too_long', 'query over 100 bytes');
refused_gif('/small?cid=summer&t=args&a=1&b=2', 'too_many_args', '4 arguments over 3');
refused_gif('/small?cid=summer&t=val&pub=' . ('v' x 11), 'value_too_long', 'an 11-byte value over 10');
refused_gif('/small?cid=' . ('s' x 11) . '&t=cidval', 'invalid_campaign', 'an 11-byte campaign id over value=10');

# Clicks and postbacks: 400 (413 for a body over the limit).
refused_status('GET', '/c?cid=../x&t=c-bad', 400, 'invalid_campaign', 'click with ../x');
refused_status('GET', "/c?cid=summer&t=c-long&pub=$long", 400, 'value_too_long', 'click with a 1025-byte value');
refused_status('GET', '/c?cid=summer&t=c-query&pad=' . ('q' x 4100), 400, 'query_too_long', 'click with a 4 KB query');
refused_status('GET', '/c?cid=summer&t=c-args' . ('&a' x 64), 400, 'too_many_args', 'click with 66 arguments');
refused_status('GET', '/pb?cid=summer&t=pb-click&click_id=' . ('k' x 129), 400, 'invalid_click_id', 'postback with a 129-byte click id');
refused_status('GET', '/pb?cid=summer&t=pb-value&click_id=k1&value=12,5', 400, 'invalid_value', 'postback value 12,5');
refused_status('GET', '/pb?cid=summer&t=pb-inf&click_id=k1&value=inf', 400, 'invalid_value', 'postback value inf');
refused_status('POST', '/smallpb?cid=summer&t=pb-body&click_id=k1', 413, 'body_too_large', 'postback body of 2 KB over 1k',
               body => 'b' x 2048);

# Valid requests, some exactly at a limit.
my @valid = (
    ['/i?cid=summer&t=ok-pixel', 200],
    ['/c?cid=summer&t=ok-click', 302],
    ['/pb?cid=summer&t=ok-pb&click_id=' . ('k' x 128) . '&value=12.5', 204],
    ['/v?cid=summer&t=ok-video&event=q1&watch_time=3', 200],
    ['/i?cid=summer&t=ok-1024&pub=' . ('y' x 1024), 200],
    ['/small?cid=summer&t=ok-q&pub=' . ('z' x 10), 200],
    # 100 bytes exactly: 3 arguments and empty parts, which do not count as arguments.
    ['/small?' . do { my $q = 'cid=summer&t=ok-100&pub=' . ('w' x 10); $q . ('&' x (100 - length $q)) }, 200],
    ['/c?cid=summer&t=ok-64args' . ('&a' x 62), 302],
);
for my $v (@valid) {
    my ($uri, $status) = @$v;
    my $len = length((split /\?/, $uri, 2)[1]);
    is($ngx->get($uri)->{status}, $status, "valid (query $len bytes): $status");
}
my $post = $ngx->client->request('POST', '/smallpb?cid=summer&t=ok-body&click_id=k2', body => 'b' x 1024);
is($post->{status}, 204, 'a postback body of exactly 1k: 204');

my $h = ring_header();
my $events = drain();

subtest 'refused requests are not stored' => sub {
    my @tags = qw(bad-cid no-cid long-pub bad-video bad-watch q args val cidval c-bad c-long c-query c-args
                  pb-click pb-value pb-inf pb-body);
    for my $t (@tags) {
        is(scalar @{ events_tagged($events, $t) }, 0, "$t: not stored");
    }
    my @stored = grep { !defined dim($_, 't') || dim($_, 't') !~ /^ok-/ } @$events;
    is(scalar @stored, 0, 'only the valid requests are in the ring');
};

subtest 'valid requests are stored whole' => sub {
    for my $t (qw(ok-pixel ok-click ok-pb ok-video ok-1024 ok-q ok-100 ok-64args ok-body)) {
        my $e = one_tagged($events, $t) or do { fail("$t: one event"); next };
        is_deeply(flags_of($e), [], "$t: no flag");
    }
    my $e = one_tagged($events, 'ok-1024');
    is($e && length dim($e, 'pub'), 1024, '1024 bytes kept whole');
    my $pb = one_tagged($events, 'ok-pb');
    is($pb && $pb->{click_id}, 'k' x 128, 'a 128-byte click id kept whole');
};

subtest 'refusals are counted per reason' => sub {
    my %reasons = map { $_ => 0 } qw(query_too_long too_many_args value_too_long invalid_campaign invalid_click_id
                                     invalid_value invalid_video_event body_too_large);
    my %expect = (%reasons, %want);
    is_deeply($h->{invalid}, \%expect, 'ring header: invalid per reason') or diag explain $h->{invalid};
    my $s = $ngx->get('/stats');
    my $j = eval { JSON::PP->new->decode($s->{body}) };
    is_deeply($j && $j->{ring}{invalid}, \%expect, 'stats JSON: ring.invalid');
    my $p = $ngx->get('/stats?format=prometheus')->{body};
    for my $r (sort keys %expect) {
        like($p, qr/^tracker_invalid_requests_total\{reason="$r"\} $expect{$r}$/m, "prometheus: $r");
    }
    my $ss = eval { shipper_stats() };
    is_deeply($ss && $ss->{invalid}, \%expect, 'tracker-shipper stats: invalid');
    is($h->{rejected_total}, 0, 'none counted as rejected');
    is($h->{written_total}, scalar @$events, 'written = stored');
};

subtest 'the error log' => sub {
    my $log = $ngx->error_log_text;
    like($log, qr/\[info\].*tracker: invalid request refused: value_too_long/, 'refusals logged at info');
    unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg');
};

subtest 'directive errors' => sub {
    my %bad = (
        'tracker_limits;'                  => qr/invalid number of arguments in "tracker_limits" directive/,
        'tracker_limits queries=1;'        => qr/"tracker_limits" directive: unknown parameter "queries"/,
        'tracker_limits query=0;'          => qr/"tracker_limits" directive: query=0 is out of range/,
        'tracker_limits args=1k;'          => qr/"tracker_limits" directive: invalid args "1k"/,
        'tracker_limits value;'            => qr/"tracker_limits" directive: "value" is not NAME=SIZE/,
        'tracker_limits args=5; tracker_limits args=6;' => qr/"tracker_limits" directive is duplicate/,
        'tracker_invalid maybe;'           => qr/invalid value "maybe" in "tracker_invalid" directive/,
        'tracker_invalid flag; tracker_invalid reject;' => qr/"tracker_invalid" directive is duplicate/,
    );
    location_directives_refused(\%bad);
    my $ok = TrackerTest::Nginx->new(http => <<'HTTP');
    tracker_ring @RING@ 4m;
    tracker_limits query=8k;
    tracker_invalid flag;
    server {
        listen @LISTEN@;
        tracker_limits args=10 value=2k body=1m;
        location = /i { tracker impression; tracker_invalid reject; tracker_limits query=1k; }
    }
HTTP
    my ($rc, $out) = $ok->test_conf;
    is($rc, 0, 'all levels accepted') or diag($out);
};

done_testing();
