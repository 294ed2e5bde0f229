# The campaign journal (docs/admin-api.md "Persistence"; core/src/journal.rs), with an nginx of
# our own (master + 2 workers, 127.0.0.1 only):
# - each change is one record appended to campaigns.json.journal, the campaigns file is not
#   rewritten; a bulk POST is one record holding all its campaigns;
# - kill -9 of the master and the workers, then a start: every change that was answered is
#   there, and the start compacted the journal into the campaigns file;
# - a HUP reload compacts the journal too (the file holds the changes, no journal left);
# - a journal that reaches 16 MiB is compacted in the background by the worker that grew it,
#   while changes go on;
# - a torn tail (a record cut short) is dropped at start; a damaged record followed by a valid
#   one makes `nginx -t` fail naming the journal and the byte offset.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use JSON::PP ();

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $CAMPAIGNS = $ENV{TEST_NGINX_CAMPAIGNS};
my $JOURNAL = "$CAMPAIGNS.journal";
my $JSON = JSON::PP->new->canonical->utf8;

write_campaigns([
    { id => 'base1', status => 'active', landing_url => 'https://base.example.com/1' },
    { id => 'base2', status => 'active', landing_url => 'https://base.example.com/2' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 2, log_level => 'info', http => <<'HTTP');
    tracker_ring      @RING@ 4m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:64m;
    client_max_body_size 20m;
    server {
        listen @LISTEN@;
        location /tracker/campaigns { tracker_admin; }
    }
HTTP
$ngx->start;

sub api {
    my ($method, $path, $body) = @_;
    my $r = $ngx->get($path, method => $method, headers => { 'Content-Type' => 'application/json' },
                      (defined $body ? (body => $JSON->encode($body)) : ()));
    $r->{json} = eval { $JSON->decode($r->{body}) } if length($r->{body} // '');
    return $r;
}

sub camp { my ($id, $n) = @_; return { id => $id, status => 'active', landing_url => "https://j.example.com/$id/$n" } }

# Every campaign through the API, as id => landing_url.
sub zone_campaigns {
    my $r = api('GET', '/tracker/campaigns?limit=1000');
    die "GET: $r->{status}" unless $r->{status} == 200;
    return { map { $_->{id} => $_->{landing_url} } @{ $r->{json}{campaigns} } };
}

# Every campaign through the API (paged), as id => landing_url.
sub zone_campaigns_all {
    my (%all, $cursor);
    while (1) {
        my $r = api('GET', '/tracker/campaigns?limit=1000' . (defined $cursor ? "&cursor=$cursor" : ''));
        die "GET: $r->{status}" unless $r->{status} == 200;
        $all{ $_->{id} } = $_->{landing_url} for @{ $r->{json}{campaigns} };
        $cursor = $r->{json}{next};
        return \%all unless defined $cursor;
    }
}

sub urls { my $d = shift; return { map { $_ => $d->{$_}{landing_url} } keys %$d } }

# kill -9 of the master and every worker at once, then wait until they are gone.
sub kill9 {
    my $m = $ngx->master_pid or die "not running";
    my @all = ($m, @{ $ngx->worker_pids });
    kill 'KILL', @all;
    wait_until(5, sub { !grep { kill(0, $_) && (read_file("/proc/$_/stat") // '') !~ /^\d+ \(.*\) Z/ } @all });
    unlink $ngx->pid_file;
    @TrackerTest::Nginx::RUNNING = grep { $_ != $ngx } @TrackerTest::Nginx::RUNNING;
}

# --- one record per change; the campaigns file is not rewritten --------------------------------
my $file0 = read_file($CAMPAIGNS);
my %expect = (base1 => 'https://base.example.com/1', base2 => 'https://base.example.com/2');
{
    is(api('PUT', '/tracker/campaigns/p1', camp('p1', 1))->{status}, 201, 'PUT p1: 201');
    is(api('PUT', '/tracker/campaigns/p1', camp('p1', 2))->{status}, 200, 'PUT p1 again: 200');
    is(api('DELETE', '/tracker/campaigns/base2')->{status}, 204, 'DELETE base2: 204');
    my @bulk = map { camp(sprintf('b%03d', $_), 1) } 1 .. 50;
    my $r = api('POST', '/tracker/campaigns', \@bulk);
    is($r->{status}, 200, 'bulk POST of 50: 200') or diag $r->{body};
    is($r->{json}{created}, 50, '50 created');
    $expect{p1} = 'https://j.example.com/p1/2';
    delete $expect{base2};
    $expect{ $_->{id} } = $_->{landing_url} for @bulk;

    is(read_file($CAMPAIGNS), $file0, 'the campaigns file is not rewritten by changes');
    my $recs = journal_records($JOURNAL);
    is(scalar @$recs, 4, 'the journal has one record per change (3 + 1 bulk)');
    is(scalar @{ $recs->[3]{upsert} || [] }, 50, 'the bulk POST is ONE record holding its 50 campaigns');
    is_deeply($recs->[2], { delete => ['base2'] }, 'a DELETE is a record of its id');
    is_deeply(urls(durable_campaigns()), \%expect, 'file + journal = every change');
    is_deeply(zone_campaigns(), \%expect, 'and the zone agrees');
}

# --- kill -9 of everything, then a start: nothing answered is lost, the journal is compacted ----
{
    kill9();
    ok(!$ngx->master_pid, 'master and workers killed with SIGKILL');
    ok(-s $JOURNAL, 'the journal is there after the crash');
    $ngx->start;
    is_deeply(zone_campaigns(), \%expect, 'after kill -9 and a start, every answered change is there');
    ok(!-e $JOURNAL && !-e "$JOURNAL.old", 'the start compacted the journal (no journal left)');
    my $f = read_file($CAMPAIGNS);
    my $list = eval { $JSON->decode($f) } || [];
    is_deeply({ map { $_->{id} => $_->{landing_url} } @$list }, \%expect, 'into the campaigns file');
    like($ngx->error_log_text, qr/journal compacted into/, 'and logged it');
}

# --- a reload compacts the journal -------------------------------------------------------------
{
    is(api('PUT', '/tracker/campaigns/r1', camp('r1', 1))->{status}, 201, 'PUT r1 before the reload');
    is(api('DELETE', '/tracker/campaigns/b001')->{status}, 204, 'DELETE b001 before the reload');
    $expect{r1} = 'https://j.example.com/r1/1';
    delete $expect{b001};
    is(scalar @{ journal_records($JOURNAL) }, 2, 'two records in the journal');
    my %old = map { $_ => 1 } @{ $ngx->worker_pids };
    $ngx->reload;
    ok(wait_until(15, sub { my $w = $ngx->worker_pids; @$w == 2 && !grep { $old{$_} } @$w }), 'the reload replaced the workers');
    ok(wait_until(5, sub { !-e $JOURNAL && !-e "$JOURNAL.old" }), 'the reload compacted the journal');
    my $list = eval { $JSON->decode(read_file($CAMPAIGNS)) } || [];
    is_deeply({ map { $_->{id} => $_->{landing_url} } @$list }, \%expect, 'the campaigns file holds the changes');
    is_deeply(zone_campaigns(), \%expect, 'and the zone too');
    is(api('PUT', '/tracker/campaigns/r2', camp('r2', 1))->{status}, 201, 'a change after the reload');
    $expect{r2} = 'https://j.example.com/r2/1';
    is(scalar @{ journal_records($JOURNAL) }, 1, 'goes to a new journal');
}

# --- compaction by size, in the background of a worker ------------------------------------------
{
    my $pad = 'p' x 180;
    my $n = 0;
    my $log_before = length $ngx->error_log_text;
    # Bulk POSTs of the same 10,000 campaigns with new URLs: about 2.5 MB a record.
    for my $round (1 .. 8) {
        my @bulk = map { { id => sprintf('big%05d', $_), status => 'active', landing_url => "https://big.example.com/$pad/$round/$_" } } 1 .. 10000;
        my $r = api('POST', '/tracker/campaigns', \@bulk);
        $n++ if $r->{status} == 200;
        diag "bulk $round: $r->{status} " . substr($r->{body} // "", 0, 200) if $r->{status} != 200;
        $expect{ $_->{id} } = $_->{landing_url} for @bulk;
        last if wait_until(0.2, sub { substr($ngx->error_log_text, $log_before) =~ /journal compacted into .*it had reached/ });
    }
    ok(wait_until(20, sub { substr($ngx->error_log_text, $log_before) =~ /journal compacted into .*it had reached 16777216 bytes/ }),
       "after $n bulk POSTs, the worker compacted the journal in the background") or diag substr($ngx->error_log_text, $log_before);
    ok(wait_until(10, sub { !-e "$JOURNAL.old" }), 'no old journal left');
    cmp_ok(-s $JOURNAL // 0, '<', 16 << 20, 'the journal is small again');
    is(api('PUT', '/tracker/campaigns/after-compaction', camp('after-compaction', 1))->{status}, 201, 'a change after the compaction');
    $expect{'after-compaction'} = 'https://j.example.com/after-compaction/1';
    is_deeply(urls(durable_campaigns()), \%expect, 'file + journal = every change');
    kill9();
    $ngx->start;
    is_deeply(zone_campaigns_all(), \%expect, 'after kill -9 and a start, every change is there');
}

# --- a torn tail is dropped; damage before valid records refuses to start --------------------------
{
    is(api('PUT', '/tracker/campaigns/t1', camp('t1', 1))->{status}, 201, 'PUT t1: one record in the journal');
    $expect{t1} = 'https://j.example.com/t1/1';
    $ngx->stop;
    my $j = read_file($JOURNAL);
    my $good = length $j;
    # A record cut short: a writer killed in the middle of its write.
    write_file($JOURNAL, $j . substr($j, 0, 30));
    my ($rc, $out) = $ngx->test_conf;
    is($rc, 0, 'nginx -t accepts a journal with a torn tail') or diag $out;
    $ngx->start;
    is_deeply(zone_campaigns_all(), \%expect, 'the torn tail is dropped, the rest is there');
    $ngx->stop;

    # Two records, the first damaged: corruption, not a torn write.
    ok(!-e $JOURNAL, 'the start compacted the journal again');
    my $bad = $j . $j;
    substr($bad, 15, 1) = substr($bad, 15, 1) eq 'x' ? 'y' : 'x';
    write_file($JOURNAL, $bad);
    ($rc, $out) = $ngx->test_conf;
    isnt($rc, 0, 'nginx -t refuses a journal damaged before a valid record');
    like($out, qr/tracker_campaigns.*journal ".*campaigns\.json\.journal" is damaged at byte 0/, 'naming the journal and the offset') or diag $out;
    unlink $JOURNAL;
}

$ngx->stop;
done_testing();
