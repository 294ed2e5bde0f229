# Reloads and restarts, with an nginx of our own (master + 2 workers, 127.0.0.1 only):
# - a reload (HUP) publishes a rewritten campaigns file: the click's Location changes;
# - a broken campaigns file fails the reload with the reason in the error log, and the old
#   campaigns keep serving; a later good reload still works;
# - requests served during the reloads (a client hammering the pixel) all get their event;
# - the ring survives a full restart: events written before it are drained afterwards, none
#   lost, none twice; nginx creates the ring with mode 0660; a new ring size does not apply to
#   a ring holding unread events (a warning says so) and applies once it is empty and nobody
#   has it open.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep time);

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my %expected;    # tag => number of answered tracker requests (each must have one event)

sub campaigns_v {
    my ($v) = @_;
    write_campaigns([
        { id => 'a', status => 'active', landing_url => "https://a.example.com/$v?k={click_id}" },
        ($v ne 'v1' ? ({ id => 'added', status => 'active', landing_url => 'https://added.example.com/' }) : ()),
    ]);
}

sub http_conf {
    my ($ring_size) = @_;
    return <<"HTTP";
    tracker_ring      \@RING\@ $ring_size;
    tracker_campaigns \@CAMPAIGNS\@ zone=campaigns:1m;
    log_format ids '\$tracker_event_id \$arg_t \$status';
    server {
        listen \@LISTEN\@;
        access_log \@WORK\@/ids.log ids;
        tracker_dimension t \$arg_t;
        location = /c { tracker click; }
        location = /i { tracker impression; }
    }
HTTP
}

campaigns_v('v1');
my $ngx = TrackerTest::Nginx->new(http => http_conf('1m'), workers => 2);
$ngx->start;
my $master = $ngx->master_pid;
is(sprintf('%o', (stat $ENV{TEST_NGINX_RING})[2] & 07777), '660', 'nginx created the ring file with mode 0660');
is(scalar @{ $ngx->worker_pids }, 2, 'two workers');

sub click {
    my ($tag, $cid) = @_;
    my $r = eval { $ngx->get('/c?cid=' . ($cid || 'a') . "&t=$tag") };
    return { status => 0, headers => {} } unless $r;
    $expected{$tag}++ if $r->{status} == 302 || $r->{status} == 404;
    return $r;
}

sub location_after {
    my ($tag, $cid) = @_;
    my $r = click($tag, $cid);
    return $r->{headers}{location} // "($r->{status})";
}

like(location_after('start'), qr{^https://a\.example\.com/v1\?k=[0-9a-f]{32}$}, 'click goes to v1');
is(click('start-added', 'added')->{status}, 404, '"added" is not a campaign yet');

# A client hammering the pixel through the reloads, one connection per request.
my $load_file = "$WORK/load.count";
my $stop_file = "$WORK/load.stop";
my $loader = fork();
die "fork: $!" unless defined $loader;
if ($loader == 0) {
    my ($ok, $bad) = (0, 0);
    until (-e $stop_file) {
        my $r = eval { $ngx->get('/i?cid=a&t=load') };
        if ($r && $r->{status} == 200 && $r->{body} eq gif_bytes()) { $ok++ } else { $bad++ }
        sleep 0.002;
    }
    write_file($load_file, "$ok $bad\n");
    POSIX::_exit(0);
}
END { kill 'KILL', $loader if $loader && $$ == $TrackerTest::PARENT_PID && !-e $load_file }

# --- a good reload ----------------------------------------------------------------------------
campaigns_v('v2');
$ngx->reload;
my $n = 0;
my $loc = wait_until(10, sub { $n++; my $l = location_after('poll-v2'); $l =~ m{/v2\?} ? $l : undef });
like($loc, qr{^https://a\.example\.com/v2\?k=[0-9a-f]{32}$}, "after the reload the click goes to v2 ($n polls)");
is(click('after-v2-added', 'added')->{status}, 302, 'a campaign added by the reload is served');
is($ngx->master_pid, $master, 'same master');

# --- a broken file: the reload fails, the old campaigns keep serving --------------------------
my $log_before = length $ngx->error_log_text;
write_file($ENV{TEST_NGINX_CAMPAIGNS},
    qq~[\n  {"id": "a", "status": "active", "landing_url": "https://a.example.com/v3"},\n  {"id": "b", "status": "active",\n]\n~);
$ngx->reload;
my $err = wait_until(10, sub {
    my $t = substr($ngx->error_log_text, $log_before);
    $t =~ /^(.*\[emerg\].*tracker_campaigns.*)$/m ? $1 : undef;
});
ok($err, 'the failed reload is in the error log') or diag substr($ngx->error_log_text, $log_before);
like($err // '', qr/campaigns\.json.*line \d+/, 'with the file and the line') if $err;
sleep 0.3;
for my $i (1 .. 10) {
    my $l = location_after('broken');
    like($l, qr{^https://a\.example\.com/v2\?}, "broken file: click $i still goes to v2") or last;
}
is(click('broken-added', 'added')->{status}, 302, 'broken file: the campaigns of the last good load still serve');
is($ngx->master_pid, $master, 'same master after the failed reload');
is(scalar @{ $ngx->worker_pids }, 2, 'still two workers');

# A file that parses but fails a check: same.
$log_before = length $ngx->error_log_text;
write_file($ENV{TEST_NGINX_CAMPAIGNS},
    qq{[\n  {"id": "a", "status": "active", "landing_url": "ftp://a.example.com/v3"}\n]\n});
$ngx->reload;
$err = wait_until(10, sub {
    my $t = substr($ngx->error_log_text, $log_before);
    $t =~ /^(.*\[emerg\].*tracker_campaigns.*)$/m ? $1 : undef;
});
like($err // '', qr/line 2/, 'a bad landing URL fails the reload, naming line 2');
like(location_after('broken2'), qr{^https://a\.example\.com/v2\?}, 'still v2');

# --- a good reload after the failed ones -------------------------------------------------------
campaigns_v('v3');
$ngx->reload;
$loc = wait_until(10, sub { my $l = location_after('poll-v3'); $l =~ m{/v3\?} ? $l : undef });
like($loc // '', qr{^https://a\.example\.com/v3\?}, 'a good reload after failed ones publishes v3');

write_file($stop_file, '');
waitpid($loader, 0);
my ($ok, $bad) = split ' ', (read_file($load_file) // '0 0');
ok($ok > 0, "the loader got $ok GIFs during the reloads");
is($bad, 0, 'no failed pixel request during the reloads');
$expected{load} = $ok;

# --- a full restart, the ring keeps its events -------------------------------------------------
for (1 .. 20) { click('before-restart') }
my $written_before = ring_header()->{written_total};
ok($ngx->stop, 'nginx stopped');
ok(!$ngx->master_pid, 'no master left');
is(ring_header()->{written_total}, $written_before, 'the ring file keeps its counters while nginx is down');

# Restart with another ring size: the ring holds unread events, so it keeps its size.
my $size_before = ring_header()->{data_size};
$ngx->write_conf(http => http_conf('2m'));
$log_before = length $ngx->error_log_text;
$ngx->start;
like(substr($ngx->error_log_text, $log_before), qr/\[warn\].*tracker_ring.*(unread|keep)/i,
     'a ring holding unread events keeps its size, with a warning');
is(ring_header()->{data_size}, $size_before, 'data size unchanged');
for (1 .. 20) { click('after-restart') }
$ngx->stop;

# --- drain everything: one event per answered request -----------------------------------------
my $events = drain();
my %got;
$got{ dim($_, 't') // '' }++ for @$events;
is_deeply(\%got, \%expected, 'one event per answered request, per tag (across reloads and the restart)')
    or diag explain { got => \%got, expected => \%expected };
my %ids;
$ids{ $_->{id} }++ for @$events;
is(scalar(grep { $_ > 1 } values %ids), 0, 'no event twice');
my @logged = map { (split ' ')[0] } @{ read_log("$WORK/ids.log") };
is(scalar(grep { !$ids{$_} } @logged), 0, 'every logged event id was drained');
is(scalar(@logged), scalar(@$events), 'as many events as logged requests');
my $h = ring_header();
is($h->{written_total}, scalar(@$events), 'written counter = drained events');
is($h->{dropped_full_total}, 0, 'nothing dropped');

# An empty ring is resized at the next start.
$ngx->start;
is(ring_header()->{data_size}, 2 * 1024 * 1024, 'an empty ring is resized to the configured 2m');
is(location_after('final') =~ m{/v3\?} ? 1 : 0, 1, 'serves after the resize');
$ngx->stop;
is(scalar @{ drain() }, 1, 'and the event after the resize is drained');

done_testing();
