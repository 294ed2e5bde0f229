# tracker_stats (docs/stats.md), with an nginx of our own (master + 2 workers, 127.0.0.1 only):
# after a known set of tracking requests spread over both workers, the JSON answer has the
# documented structure, the module-wide ring counters are exact per type (and equal to the ring
# file's header), the per-campaign counters are exactly the banker's (events seen, spend
# charged, a cap reached, a paused campaign's rejected events, conversion values, video
# completes); paging with limit/cursor walks every campaign once; ?campaign=ID; errors (400,
# 404, 405) are JSON; every answer has Cache-Control: no-store; the Prometheus text is valid
# exposition format 0.0.4, its metric names are exactly the documented ones and its values
# those of the JSON; ?format=html serves src/dashboard.html as it is, with no external asset;
# without tracker_ring the ring is null and its metrics absent.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time);

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $json = JSON::PP->new->canonical;

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/s?k={click_id}',
      price_per_click => 0.25, price_per_mille => 2, price_per_conversion => 1.5 },
    { id => 'capped', status => 'active', landing_url => 'https://shop.example.com/c', daily_clicks => 3,
      fallback_url => 'https://shop.example.com/fallback' },
    { id => 'winter', status => 'paused', landing_url => 'https://shop.example.com/w' },
    { id => 'vid-1', status => 'active', landing_url => 'https://shop.example.com/v' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 2, log_level => 'warn', http => <<'HTTP');
    tracker_ring      @RING@ 1m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    server {
        listen @LISTEN@ reuseport;
        keepalive_requests 10000;
        location = /i   { tracker impression; }
        location = /ic  { tracker impression; tracker_unknown_campaign count; }
        location = /c   { tracker click; }
        location = /cv  { tracker conversion; }
        location = /v   { tracker video; }
        location = /b   { tracker signup response=empty; }
        location = /tracker/stats { tracker_stats; }
    }
HTTP
$ngx->start;
is(scalar @{ $ngx->worker_pids }, 2, 'two workers');
my $c = $ngx->client;

sub get_json {
    my ($uri) = @_;
    my $r = $c->get($uri);
    my $d = eval { $json->decode($r->{body}) };
    return ($r, $d);
}

# --- before any traffic ------------------------------------------------------------------------
my $t0 = time;
my ($r0, $s0) = get_json('/tracker/stats');
is($r0->{status}, 200, 'GET /tracker/stats: 200');
like($r0->{headers}{'content-type'} // '', qr{^application/json\b}, 'JSON content type');
is($r0->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store');
ok(ref $s0 eq 'HASH', 'the body is a JSON object') or diag $r0->{body};
is($s0->{ring}{written}{total}, 0, 'nothing written yet');

# --- the traffic: 4 processes, keepalive connections over both workers --------------------------
# Each list: [path, query, count]. Expected counts follow from them (see below).
my @plan = (
    ['/i',  'cid=summer', 40],
    ['/c',  'cid=summer', 10],
    ['/cv', 'cid=summer&click_id=k1&value=12.5', 5],
    ['/c',  'cid=capped', 6],
    ['/i',  'cid=winter', 4],
    ['/v',  'cid=vid-1&event=start', 1],
    ['/v',  'cid=vid-1&event=q1', 1],
    ['/v',  'cid=vid-1&event=mid', 1],
    ['/v',  'cid=vid-1&event=q3', 1],
    ['/v',  'cid=vid-1&event=complete', 2],
    ['/b',  'cid=summer', 3],
    ['/ic', 'cid=nobody', 3],
);
my @reqs = map { my $p = $_; map { "$p->[0]?$p->[1]" } 1 .. $p->[2] } @plan;
my $KIDS = 4;
my @kids;
for my $k (0 .. $KIDS - 1) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $cc = $ngx->client;
        my $bad = 0;
        for my $i (grep { $_ % $KIDS == $k } 0 .. $#reqs) {
            my $r = eval { $cc->get($reqs[$i]) };
            $bad++ unless $r && $r->{status} =~ /^(200|204|302)$/;
        }
        $cc->close;
        write_file("$WORK/kid.$k", "$bad\n");
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;
my $bad = 0;
$bad += (read_file("$WORK/kid.$_") // 1) for 0 .. $KIDS - 1;
is($bad, 0, scalar(@reqs) . ' tracking requests answered 200/204/302');

my %written = (impression => 44, click => 16, conversion => 5, video => 6, custom => 3);
my $written_total = 0;
$written_total += $_ for values %written;

# --- JSON --------------------------------------------------------------------------------------
my ($r, $s) = get_json('/tracker/stats');
my $t1 = time;
is($r->{status}, 200, 'stats after the traffic: 200');
ok(ref $s eq 'HASH', 'JSON object') or BAIL_OUT("no JSON: $r->{body}");

subtest 'structure' => sub {
    is_deeply([sort keys %$s], [qw(campaigns ring time zone)], 'top-level keys');
    ok($s->{time} >= $t0 - 2 && $s->{time} <= $t1 + 2, "time ($s->{time}) is now, in Unix seconds");
    is_deeply([sort keys %{ $s->{campaigns} }], [qw(count cursor items limit next)], 'campaigns keys');
    is($s->{campaigns}{count}, 4, 'count: 4 campaigns');
    is($s->{campaigns}{limit}, 100, 'default limit 100');
    is($s->{campaigns}{cursor}, '0', 'cursor "0"');
    ok(!defined $s->{campaigns}{next}, 'next null: everything on one page');
    is(scalar @{ $s->{campaigns}{items} }, 4, '4 items');
    my @fields = qw(id status impressions clicks conversions video_completes spend spend_micros
                    spend_today spend_today_micros impressions_today clicks_today over_budget
                    rejected value value_micros);
    for my $it (@{ $s->{campaigns}{items} }) {
        is_deeply([sort keys %$it], [sort @fields], "item $it->{id}: fields");
        my @nonnum = grep { !defined $it->{$_} || $it->{$_} !~ /^\d+(\.\d+)?(e[-+]?\d+)?$/i } grep { !/^(id|status)$/ } @fields;
        is_deeply(\@nonnum, [], "item $it->{id}: numbers");
        ok(abs($it->{spend} - $it->{spend_micros} / 1e6) < 1e-9, "item $it->{id}: spend = spend_micros / 1e6");
        ok(abs($it->{value} - $it->{value_micros} / 1e6) < 1e-9, "item $it->{id}: value = value_micros / 1e6");
    }
    my %status = map { $_->{id} => $_->{status} } @{ $s->{campaigns}{items} };
    is_deeply(\%status, { summer => 'active', capped => 'active', winter => 'paused', 'vid-1' => 'active' }, 'ids and statuses');
    is_deeply([sort keys %{ $s->{ring} }],
              [sort qw(size used fill_ratio producer_pos consumer_pos written dropped_full dropped_too_large rejected duplicates duplicate_evictions abandoned invalid)],
              'ring keys');
    is_deeply([sort keys %{ $s->{zone} }], [qw(campaigns free generation size)], 'zone keys');
    is($s->{zone}{size}, 1048576, 'zone size 1m');
    is($s->{zone}{campaigns}, 4, 'zone campaigns');
    ok($s->{zone}{free} > 0 && $s->{zone}{free} < $s->{zone}{size}, 'zone free bytes');
};

subtest 'ring counters: exact per type, equal to the ring header' => sub {
    my $ring = $s->{ring};
    my %w = %{ $ring->{written} };
    my $total = delete $w{total};
    is_deeply(\%w, \%written, 'written per type') or diag explain $ring->{written};
    is($total, $written_total, "written total $written_total");
    is_deeply($ring->{rejected}, { impression => 3, click => 0, conversion => 0, video => 0, custom => 0, total => 3 },
              'rejected: the 3 unknown-campaign impressions of a "count" location');
    is($ring->{dropped_full}{total}, 0, 'nothing dropped (full)');
    is($ring->{dropped_too_large}{total}, 0, 'nothing dropped (too large)');
    is($ring->{abandoned}, 0, 'nothing abandoned');
    my $h = ring_header();
    is($ring->{size}, $h->{data_size}, 'size = the ring data size');
    is($ring->{producer_pos}, $h->{producer_pos}, 'producer position');
    is($ring->{consumer_pos}, $h->{consumer_pos}, 'consumer position (no shipper: 0)');
    is($ring->{used}, $h->{producer_pos} - $h->{consumer_pos}, 'used = producer - consumer');
    ok(abs($ring->{fill_ratio} - $ring->{used} / $ring->{size}) < 1e-12, "fill_ratio = used / size ($ring->{fill_ratio})");
    ok($ring->{fill_ratio} > 0 && $ring->{fill_ratio} < 1, 'fill ratio between 0 and 1');
    for my $k (keys %written) {
        is($h->{written}[kind_index($k)], $written{$k}, "ring header: $k written");
    }
};

subtest 'per-campaign counters (the banker)' => sub {
    my %by = map { $_->{id} => $_ } @{ $s->{campaigns}{items} };
    my %want = (
        summer => { impressions => 40, clicks => 10, conversions => 5, video_completes => 0,
                    spend_micros => 10 * 250_000 + 40 * 2_000 + 5 * 1_500_000,
                    spend_today_micros => 10 * 250_000 + 40 * 2_000 + 5 * 1_500_000,
                    impressions_today => 40, clicks_today => 10,
                    over_budget => 0, rejected => 0, value_micros => 5 * 12_500_000 },
        capped => { impressions => 0, clicks => 6, conversions => 0, video_completes => 0,
                    spend_micros => 0, spend_today_micros => 0, impressions_today => 0, clicks_today => 3,
                    over_budget => 3, rejected => 0, value_micros => 0 },
        winter => { impressions => 4, clicks => 0, conversions => 0, video_completes => 0,
                    spend_micros => 0, spend_today_micros => 0, impressions_today => 0, clicks_today => 0,
                    over_budget => 0, rejected => 4, value_micros => 0 },
        'vid-1' => { impressions => 0, clicks => 0, conversions => 0, video_completes => 2,
                    spend_micros => 0, spend_today_micros => 0, impressions_today => 0, clicks_today => 0,
                    over_budget => 0, rejected => 0, value_micros => 0 },
    );
    for my $id (sort keys %want) {
        my $it = $by{$id} or do { fail("no item $id"); next };
        my %got = map { $_ => $it->{$_} } keys %{ $want{$id} };
        is_deeply(\%got, $want{$id}, "$id: counters") or diag explain \%got;
    }
};

subtest '?campaign=ID, paging with limit and cursor' => sub {
    my ($r1, $one) = get_json('/tracker/stats?campaign=summer');
    is($r1->{status}, 200, '?campaign=summer: 200');
    is(scalar @{ $one->{campaigns}{items} }, 1, 'one item');
    is($one->{campaigns}{items}[0]{id}, 'summer', 'the campaign asked for');
    my %by = map { $_->{id} => $_ } @{ $s->{campaigns}{items} };
    is($one->{campaigns}{items}[0]{impressions}, $by{summer}{impressions}, 'same counters as in the list');
    is($one->{campaigns}{count}, 4, 'count is still the zone\'s');
    is($one->{ring}{written}{total}, $written_total, 'module-wide counters too');
    my ($r2, $e) = get_json('/tracker/stats?campaign=nope');
    is($r2->{status}, 404, 'unknown campaign: 404');
    like($e && $e->{error}, qr/no campaign "nope"/, 'JSON error names it');
    is($r2->{headers}{'cache-control'}, 'no-store', '404: no-store');

    my (@ids, $cursor, $pages);
    while (1) {
        my $uri = '/tracker/stats?limit=1' . (defined $cursor ? "&cursor=$cursor" : '');
        my ($rp, $p) = get_json($uri);
        is($rp->{status}, 200, "$uri: 200") or last;
        ok(@{ $p->{campaigns}{items} } <= 1, 'at most limit items');
        is($p->{campaigns}{limit}, 1, 'limit 1');
        push @ids, map { $_->{id} } @{ $p->{campaigns}{items} };
        $cursor = $p->{campaigns}{next};
        last if !defined $cursor || ++$pages > 10;
        like($cursor, qr/^\d+$/, "next $cursor");
    }
    is_deeply([sort @ids], [sort keys %by], 'limit=1 pages walk every campaign once');
    my ($rb, $big) = get_json('/tracker/stats?limit=5000');
    is($big->{campaigns}{limit}, 1000, 'limit is at most 1000');
    my ($rz, $zero) = get_json('/tracker/stats?limit=0');
    is(scalar @{ $zero->{campaigns}{items} }, 0, 'limit=0: no items');
    is($zero->{ring}{written}{total}, $written_total, 'limit=0: module-wide counters');
    my ($re, $end) = get_json('/tracker/stats?cursor=999999');
    is(scalar @{ $end->{campaigns}{items} }, 0, 'a cursor past the end: no items');
    ok(!defined $end->{campaigns}{next}, '... and no next cursor');
};

subtest 'errors and methods' => sub {
    for my $q ('limit=abc', 'limit=-1', 'cursor=x', 'format=xml') {
        my ($re, $e) = get_json("/tracker/stats?$q");
        is($re->{status}, 400, "?$q: 400");
        ok($e && $e->{error}, "?$q: JSON error: " . ($e ? $e->{error} : $re->{body}));
        is($re->{headers}{'cache-control'}, 'no-store', "?$q: no-store");
    }
    for my $m (qw(POST PUT DELETE OPTIONS)) {
        my $re = $c->request($m, '/tracker/stats', body => $m eq 'POST' || $m eq 'PUT' ? '{}' : undef);
        is($re->{status}, 405, "$m: 405");
        is($re->{headers}{allow}, 'GET, HEAD', "$m: Allow: GET, HEAD");
        is($re->{headers}{'cache-control'}, 'no-store', "$m: no-store");
    }
    my $h = $c->request('HEAD', '/tracker/stats');
    is($h->{status}, 200, 'HEAD: 200');
    is($h->{body}, '', 'HEAD: no body');
    like($h->{headers}{'content-type'} // '', qr{^application/json}, 'HEAD: JSON content type');
    my $hp = $c->request('HEAD', '/tracker/stats?format=prometheus');
    like($hp->{headers}{'content-type'} // '', qr{^text/plain; version=0\.0\.4}, 'HEAD prometheus: content type');
};

# --- Prometheus --------------------------------------------------------------------------------
my $SAMPLE = qr/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*")*)\})? (-?(?:\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|NaN|\+Inf|-Inf))$/;

# Parses an exposition: { families => {name => {type, help, samples => [[labels hash, value]]}},
# errors => [...], order => [names] }.
sub parse_prometheus {
    my ($text) = @_;
    my (%fam, @errors, @order, %closed, $current);
    my $n = 0;
    for my $line (split /\n/, $text) {
        $n++;
        if ($line =~ /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/) {
            my ($what, $name, $rest) = ($1, $2, $3);
            push @errors, "line $n: $what of $name after its samples" if $closed{$name};
            if ($what eq 'TYPE') {
                push @errors, "line $n: second TYPE for $name" if $fam{$name}{type};
                push @errors, "line $n: bad type $rest" unless $rest =~ /^(counter|gauge|histogram|summary|untyped)$/;
                $fam{$name}{type} = $rest;
                push @order, $name;
            } else {
                $fam{$name}{help} = $rest;
            }
            $closed{$current} = 1 if defined $current && $current ne $name;
            $current = $name;
            next;
        }
        next if $line =~ /^#/;    # other comments are allowed
        if ($line !~ $SAMPLE) {
            push @errors, "line $n: not a sample: $line";
            next;
        }
        my ($name, $labels, $value) = ($1, $2, $3);
        push @errors, "line $n: $name has no TYPE" unless $fam{$name}{type};
        push @errors, "line $n: $name is not grouped with its family" if defined $current && $current ne $name;
        my %l;
        while (defined $labels && $labels =~ /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"/g) {
            push @errors, "line $n: label $1 twice" if exists $l{$1};
            $l{$1} = $2;
        }
        push @{ $fam{$name}{samples} }, [\%l, $value];
    }
    push @errors, 'no trailing newline' unless $text =~ /\n\z/;
    return { families => \%fam, errors => \@errors, order => \@order };
}

sub prom_value {
    my ($p, $name, %labels) = @_;
    my @m = grep {
        my $l = $_->[0];
        keys %$l == keys %labels && !grep { !defined $l->{$_} || $l->{$_} ne $labels{$_} } keys %labels
    } @{ $p->{families}{$name}{samples} || [] };
    return @m == 1 ? $m[0][1] : undef;
}

# The metric names docs/stats.md documents: `tracker_...` in the first column of its tables.
my $doc = read_file("$TrackerTest::ROOT/docs/stats.md") // '';
my %documented = map { $_ => 1 } $doc =~ /^\| `(tracker_[a-z_]+)`/mg;

subtest 'Prometheus text format' => sub {
    my $pr = $c->get('/tracker/stats?format=prometheus');
    is($pr->{status}, 200, 'status 200');
    is($pr->{headers}{'content-type'}, 'text/plain; version=0.0.4; charset=utf-8', 'content type');
    is($pr->{headers}{'cache-control'}, 'no-store', 'no-store');
    my $p = parse_prometheus($pr->{body});
    is_deeply($p->{errors}, [], 'valid exposition format') or diag $pr->{body};
    my %fam = %{ $p->{families} };
    for my $name (sort keys %fam) {
        ok($fam{$name}{help}, "$name has HELP");
        ok($fam{$name}{type}, "$name has TYPE");
        if (($fam{$name}{type} // '') eq 'counter') {
            like($name, qr/_total$/, "counter $name ends in _total");
        } else {
            unlike($name, qr/_total$/, "gauge $name does not end in _total");
        }
    }
    ok(keys %documented >= 20, scalar(keys %documented) . ' metric names documented in docs/stats.md');
    is_deeply([sort keys %fam], [sort keys %documented], 'the metric names are the documented ones');

    is(prom_value($p, 'tracker_campaigns'), 4, 'tracker_campaigns 4');
    for my $k (sort keys %written) {
        is(prom_value($p, 'tracker_ring_events_written_total', type => $k), $written{$k}, "written_total{type=$k}");
        is(prom_value($p, 'tracker_ring_events_dropped_total', reason => 'full', type => $k), 0, "dropped_total{reason=full,type=$k}");
        is(prom_value($p, 'tracker_ring_events_dropped_total', reason => 'too_large', type => $k), 0, "dropped_total{reason=too_large,type=$k}");
    }
    is(prom_value($p, 'tracker_ring_events_rejected_total', type => 'impression'), 3, 'rejected_total{type=impression} 3');
    ok(abs(prom_value($p, 'tracker_ring_fill_ratio') - $s->{ring}{fill_ratio}) < 1e-12, 'fill ratio as in the JSON');
    is(prom_value($p, 'tracker_ring_size_bytes'), $s->{ring}{size}, 'ring size');
    is(prom_value($p, 'tracker_zone_size_bytes'), 1048576, 'zone size');
    is(prom_value($p, 'tracker_stats_campaigns_exported'), 4, 'all 4 campaigns exported');
    my %json_of = (
        tracker_campaign_impressions_total => 'impressions', tracker_campaign_clicks_total => 'clicks',
        tracker_campaign_conversions_total => 'conversions', tracker_campaign_video_completes_total => 'video_completes',
        tracker_campaign_spend_micros_total => 'spend_micros', tracker_campaign_conversion_value_micros_total => 'value_micros',
        tracker_campaign_over_budget_total => 'over_budget', tracker_campaign_rejected_total => 'rejected',
        tracker_campaign_spend_today_micros => 'spend_today_micros', tracker_campaign_impressions_today => 'impressions_today',
        tracker_campaign_clicks_today => 'clicks_today',
    );
    for my $it (@{ $s->{campaigns}{items} }) {
        my $id = $it->{id};
        is(prom_value($p, 'tracker_campaign_info', campaign => $id, status => $it->{status}), 1, "info{campaign=$id,status=$it->{status}}");
        my @diff = grep { (prom_value($p, $_, campaign => $id) // 'none') ne $it->{$json_of{$_}} } sort keys %json_of;
        is_deeply(\@diff, [], "$id: every per-campaign metric equals the JSON");
    }

    my $p1 = parse_prometheus($c->get('/tracker/stats?format=prometheus&limit=1')->{body});
    is_deeply($p1->{errors}, [], 'limit=1: valid');
    is(prom_value($p1, 'tracker_stats_campaigns_exported'), 1, 'limit=1: one campaign exported');
    is(scalar @{ $p1->{families}{tracker_campaign_clicks_total}{samples} }, 1, 'limit=1: one sample per campaign family');
    my $p1_text = $c->get('/tracker/stats?format=prometheus&limit=1')->{body};
    like($p1_text, qr/^# tracker: 1 of 4 campaigns .*cursor=\d+$/m, 'limit=1: a comment tells where the next ones are');
    my $p0 = parse_prometheus($c->get('/tracker/stats?format=prometheus&limit=0')->{body});
    is_deeply($p0->{errors}, [], 'limit=0: valid');
    ok(!@{ $p0->{families}{tracker_campaign_impressions_total}{samples} || [] }, 'limit=0: no per-campaign samples');
    is(prom_value($p0, 'tracker_ring_events_written_total', type => 'impression'), 44, 'limit=0: ring metrics still there');
    my $pc = parse_prometheus($c->get('/tracker/stats?format=prometheus&campaign=winter')->{body});
    is(prom_value($pc, 'tracker_campaign_info', campaign => 'winter', status => 'paused'), 1, '?campaign=winter');
    is(prom_value($pc, 'tracker_stats_campaigns_exported'), 1, '?campaign=: one campaign');
};

subtest 'HTML dashboard' => sub {
    my $h = $c->get('/tracker/stats?format=html');
    is($h->{status}, 200, 'status 200');
    is($h->{headers}{'content-type'}, 'text/html; charset=utf-8', 'text/html; charset=utf-8');
    is($h->{headers}{'cache-control'}, 'no-store', 'no-store');
    like($h->{headers}{'content-security-policy'} // '', qr/default-src 'none'.*connect-src 'self'/, 'a CSP that only lets it fetch its own location');
    my $file = read_file("$TrackerTest::ROOT/src/dashboard.html");
    ok($h->{body} eq $file, 'the body is src/dashboard.html') or diag length($h->{body}) . ' vs ' . length($file);
    like($h->{body}, qr/^<!doctype html>/i, 'an HTML document');
    like($h->{body}, qr/format.*json/s, 'it fetches the JSON');
    unlike($h->{body}, qr{(?:src|href)\s*=\s*["']?(?:https?:)?//}i, 'no external asset');
    unlike($h->{body}, qr{\@import|url\(\s*["']?(?:https?:)?//}i, 'no external style');
};

$c->close;
$ngx->stop;
is(scalar(grep { /\[(alert|crit|emerg)\]/ } split /\n/, $ngx->error_log_text), 0, 'no alert, crit or emerg in the error log');

subtest 'without tracker_ring: ring null, no ring metrics' => sub {
    my $n2 = TrackerTest::Nginx->new(workers => 1, log_level => 'warn', http => <<'HTTP');
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    server {
        listen @LISTEN@;
        location = /s { tracker_stats; }
    }
HTTP
    $n2->start;
    my $r2 = $n2->get('/s');
    my $d = eval { $json->decode($r2->{body}) } || {};
    is($r2->{status}, 200, 'status 200');
    ok(exists $d->{ring} && !defined $d->{ring}, 'ring: null');
    is($d->{campaigns}{count}, 4, 'the campaigns are there');
    my $p = parse_prometheus($n2->get('/s?format=prometheus')->{body});
    is_deeply($p->{errors}, [], 'valid Prometheus text');
    is(scalar(grep { /^tracker_ring_/ } keys %{ $p->{families} }), 0, 'no tracker_ring_* metric');
    is(prom_value($p, 'tracker_campaigns'), 4, 'tracker_campaigns 4');
    $n2->stop;
};

done_testing();
