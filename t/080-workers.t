# Two workers writing the ring at once: 2,000 requests over 16 concurrent keepalive
# connections (reuseport spreads them over both workers), then one drain: exactly one event per
# answered request (each (connection, request number) pair once), all ids unique, both worker
# pids served (access log $pid), and each worker's ids increase in the order it served them.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use POSIX ();

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $CONNS = 16;
my $PER_CONN = 125;

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/s?k={click_id}' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 2, log_level => 'warn', http => <<'HTTP');
    tracker_ring      @RING@ 8m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    log_format w '$pid $tracker_event_id $status $arg_conn $arg_n';
    server {
        listen @LISTEN@ reuseport;
        access_log @WORK@/w.log w;
        keepalive_requests 10000;
        tracker_dimension conn $arg_conn;
        tracker_dimension n    $arg_n;
        location = /i { tracker impression; }
        location = /c { tracker click; }
    }
HTTP
$ngx->start;
my @workers = @{ $ngx->worker_pids };
is(scalar @workers, 2, 'two workers');

# --- the load: one child per connection ------------------------------------------------------
my @kids;
for my $conn (1 .. $CONNS) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my %st;
        my $c = $ngx->client;
        for my $n (1 .. $PER_CONN) {
            my $path = $n % 4 == 0 ? '/c' : '/i';
            my $r = eval { $c->get("$path?cid=summer&conn=$conn&n=$n") };
            my $s = $r ? $r->{status} : 'error';
            $s = 'badgif' if $r && $s == 200 && $r->{body} ne gif_bytes();
            $st{"$path $s"}++;
        }
        $c->close;
        write_file("$WORK/load.$conn", join('', map { "$_ $st{$_}\n" } sort keys %st));
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;

my %status;
for my $conn (1 .. $CONNS) {
    for my $line (@{ read_log("$WORK/load.$conn") }) {
        my ($path, $s, $n) = split ' ', $line;
        $status{"$path $s"} += $n;
    }
}
my $total = $CONNS * $PER_CONN;
my $clicks = $CONNS * int($PER_CONN / 4);    # every 4th request of a connection is a click
is_deeply(\%status, { '/i 200' => $total - $clicks, '/c 302' => $clicks },
          "all $total requests answered: 200 GIF for /i, 302 for /c") or diag explain \%status;
my $served = ($status{'/i 200'} || 0) + ($status{'/c 302'} || 0);

$ngx->stop;

# --- the events --------------------------------------------------------------------------------
my $events = drain();
is(scalar @$events, $served, "one event per answered request ($served)");
my %ids;
$ids{ $_->{id} }++ for @$events;
is(scalar(keys %ids), scalar(@$events), 'all ids unique');

my %pairs;
$pairs{ (dim($_, 'conn') // '?') . '/' . (dim($_, 'n') // '?') }++ for @$events;
my @missing = grep { !$pairs{$_} } map { my $c = $_; map { "$c/$_" } 1 .. $PER_CONN } 1 .. $CONNS;
my @twice = grep { $pairs{$_} > 1 } keys %pairs;
is(scalar @missing, 0, 'every request has its event') or diag "missing: @missing[0 .. ($#missing < 9 ? $#missing : 9)]";
is(scalar @twice, 0, 'no request has two events') or diag "twice: @twice[0 .. ($#twice < 9 ? $#twice : 9)]";

my %types;
$types{ $_->{type} }++ for @$events;
is_deeply(\%types, { impression => $total - $clicks, click => $clicks }, 'events per type');
is(scalar(grep { $_->{type} eq 'click' && ($_->{click_id} // '') ne $_->{id} } @$events), 0,
   "every click's click_id is its id");

# Which worker wrote what (access log: pid, event id).
my (%by_pid, %order_ok);
my $log = read_log("$WORK/w.log");
is(scalar @$log, $served, 'one access log line per request');
for my $line (@$log) {
    my ($pid, $eid) = split ' ', $line;
    push @{ $by_pid{$pid} }, $eid;
}
is(scalar(keys %by_pid), 2, 'both workers served requests: ' . join(', ', map { "$_: " . scalar @{ $by_pid{$_} } } sort keys %by_pid));
ok((grep { $_ == $workers[0] || $_ == $workers[1] } keys %by_pid) == keys %by_pid, 'the pids are the two workers');
my $unknown = grep { !$ids{$_} } map { @$_ } values %by_pid;
is($unknown, 0, 'every logged id was drained');
for my $pid (sort keys %by_pid) {
    my $ids = $by_pid{$pid};
    my $bad = grep { $ids->[$_ - 1] ge $ids->[$_] } 1 .. $#$ids;
    is($bad, 0, "worker $pid: ids increase in the order it served the requests");
}

my $h = ring_header();
is($h->{written_total}, $served, 'ring written counter = events');
is($h->{dropped_full_total} + $h->{dropped_too_large_total}, 0, 'nothing dropped');
is($h->{abandoned}, 0, 'nothing abandoned');
is($h->{consumer_pos}, $h->{producer_pos}, 'the drain consumed everything');

done_testing();
