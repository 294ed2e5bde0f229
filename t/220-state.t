# tracker_state: the campaign accounts live in a file and survive restarts (issue 11). With an
# nginx of our own (master + 2 workers, 127.0.0.1 only), a campaign of total_clicks 100 at
# 0.01 a click:
# - 80 clicks, `nginx -s quit`, start: the counters read the same; 80 more clicks: exactly 20
#   charged (the cap holds across the restart);
# - SIGKILL of the master and the workers mid-way, then start: the same (another campaign);
# - the stored events' cost_micros sum to the counters, never over the cap;
# - a binary upgrade (USR2, both masters serving, QUIT to the old one) under load: the two
#   masters' workers charge one set of counters, the cap holds exactly;
# - a campaign deleted while nginx was down has its account dropped (back at zero later);
# - a reload that adds or removes tracker_state is refused (restart needed), nginx -t says at
#   notice level that counters will not survive a restart without it;
# - a corrupt state file: nginx starts, says so at [error] naming both paths, moves it aside;
#   `tracker-shipper accounts rebuild` then restores the counters from the stored events;
# - the duplicates set (tracker_duplicates_zone) lives in PATH.duplicates: a conversion seen
#   before a restart is a duplicate after it (flagged, not charged).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use POSIX ();
use Time::HiRes qw(sleep);

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $STATE = "$WORK/state/accounts";
mkdir "$WORK/state";

sub capped { my $id = shift; return { id => $id, status => 'active', landing_url => "https://$id.example.com/l",
    price_per_click => 0.01, total_clicks => 100 } }

my $conv = { id => 'conv', status => 'active', landing_url => 'https://conv.example.com/',
    price_per_conversion => 2 };
write_campaigns([ capped('a'), capped('k'), capped('up'), capped('gone'), $conv ]);

sub http_conf {
    my ($state) = @_;
    return <<"HTTP";
    tracker_ring      \@RING\@ 8m;
    tracker_campaigns \@CAMPAIGNS\@ zone=campaigns:1m;
    tracker_duplicates_zone 1m window=1h;
    $state
    server {
        listen \@LISTEN\@;
        tracker_dimension t \$arg_t;
        tracker_fallback_url "https://fallback.example.com/?c={campaign}";
        location = /c { tracker click; }
        location = /cv { tracker conversion response=empty; tracker_duplicates flag; }
        location /tracker/campaigns { tracker_admin; tracker_admin_token off; }
    }
HTTP
}

my $ngx = TrackerTest::Nginx->new(workers => 2, http => http_conf("tracker_state $STATE 1m sync=1s;"));
$ngx->start;
is(sprintf('%o', (stat $STATE)[2] & 07777), '660', 'nginx created the state file with mode 0660');
is(sprintf('%o', (stat "$STATE.duplicates")[2] & 07777), '660', 'and the duplicates file, beside it');
# sync=1s: one worker (worker 0) has the msync thread.
my @msync = grep {
    my $w = $_;
    grep { (TrackerTest::read_file($_) // '') =~ /^tracker-msync/ } glob("/proc/$w/task/*/comm");
} @{ $ngx->worker_pids };
is(scalar @msync, 1, 'one worker runs the msync thread');
{
    my ($task) = grep { (TrackerTest::read_file("$_/comm") // '') =~ /^tracker-msync/ }
        glob("/proc/$msync[0]/task/*");
    my ($blk) = (TrackerTest::read_file("$task/status") // '') =~ /^SigBlk:\s*([0-9a-f]+)/m;
    my $mask = hex(substr($blk // '0', -8));
    is(scalar(grep { $mask & (1 << ($_ - 1)) } 1, 3, 10, 12, 14, 15, 17), 7,
        'the msync thread blocks nginx\'s signals (HUP QUIT USR1 USR2 ALRM TERM CHLD)');
}

# Clicks on `cid`; returns how many went to the landing URL (charged).
sub clicks {
    my ($cid, $n, $tag) = @_;
    my $charged = 0;
    for (1 .. $n) {
        my $r = eval { $ngx->get("/c?cid=$cid&t=$tag") } or next;
        $charged++ if ($r->{headers}{location} // '') =~ m{^https://\Q$cid\E\.example\.com/l};
    }
    return $charged;
}

sub counters {
    my $cid = shift;
    my $r = $ngx->get("/tracker/campaigns/$cid");
    return {} unless $r->{status} == 200;
    return JSON::PP->new->decode($r->{body})->{counters};
}

# --- (a) nginx -s quit, then start ---------------------------------------------------------------
is(clicks('a', 80, 'a1'), 80, '80 clicks charged');
is(counters('a')->{spend_micros}, 800_000, 'spend 0.80');
is($ngx->get('/cv?cid=conv&click_id=X&t=cv-before')->{status}, 204, 'conversion X');
ok($ngx->stop('QUIT'), 'nginx -s quit');
$ngx->start;
is(counters('a')->{spend_micros}, 800_000, 'after the restart: the same spend');
is(counters('a')->{clicks}, 80, 'after the restart: the same clicks');
is($ngx->get('/cv?cid=conv&click_id=X&t=cv-after')->{status}, 204, 'conversion X again after the restart');
is(counters('conv')->{spend_micros}, 2_000_000, 'charged once');
is(clicks('a', 80, 'a2'), 20, 'after the restart: 20 of 80 more clicks charged (cap 100)');
is(counters('a')->{spend_micros}, 1_000_000, 'spend 1.00: the cap, not 1.60');

# --- (c) SIGKILL of the master and the workers ---------------------------------------------------
is(clicks('k', 50, 'k1'), 50, '50 clicks charged');
{
    my $m = $ngx->master_pid;
    my @w = @{ $ngx->worker_pids };
    kill 'KILL', $m, @w;
    TrackerTest::wait_until(5, sub { !grep { kill 0, $_ } $m, @w });
    unlink $ngx->pid_file;
}
$ngx->start;
is(counters('k')->{spend_micros}, 500_000, 'after SIGKILL of master and workers: the same spend');
is(clicks('k', 80, 'k2'), 50, 'after SIGKILL: 50 of 80 more clicks charged');

# --- (b) binary upgrade under load ---------------------------------------------------------------
my $stop_file = "$WORK/load.stop";
my @loaders;
for my $i (1 .. 3) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        my $n = 0;
        until (-e $stop_file || $n >= 400) { clicks('up', 1, 'up'); $n++; sleep 0.005 }
        POSIX::_exit(0);
    }
    push @loaders, $pid;
}
sleep 0.3;
my $old = $ngx->master_pid;
kill 'USR2', $old;
my $new = TrackerTest::wait_until(10, sub {
    my $m = $ngx->master_pid;
    return $m && $m != $old && -e $ngx->pid_file . '.oldbin' ? $m : undef;
});
ok($new, 'USR2: a new master runs beside the old one');
sleep 0.5;    # both masters' workers serve
kill 'QUIT', $old;
ok(TrackerTest::wait_until(10, sub { !kill(0, $old) }), 'QUIT to the old master: it exits');
sleep 0.3;
TrackerTest::write_file($stop_file, '');
waitpid $_, 0 for @loaders;
is(counters('up')->{spend_micros}, 1_000_000, 'binary upgrade under load: spend exactly at the cap');
is(clicks('up', 10, 'up-after'), 0, 'after the upgrade: nothing more charged');

# --- the events ----------------------------------------------------------------------------------
$ngx->stop('QUIT');
my $events = drain();
my %cost;
$cost{ $_->{campaign} } += $_->{cost_micros} // 0 for @$events;
is($cost{a}, 1_000_000, 'campaign a: the events cost exactly the cap');
is($cost{k}, 1_000_000, 'campaign k: the events cost exactly the cap');
is($cost{up}, 1_000_000, 'campaign up: the events cost exactly the cap (two masters)');
my ($before) = grep { (dim($_, 't') // '') eq 'cv-before' } @$events;
my ($after) = grep { (dim($_, 't') // '') eq 'cv-after' } @$events;
ok($before && !has_flag($before, 'duplicate') && $before->{cost_micros} == 2_000_000, 'conversion X before the restart: charged');
ok($after && has_flag($after, 'duplicate') && !defined $after->{cost_micros}, 'after it: a duplicate, not charged');

# --- a campaign deleted while nginx was down -----------------------------------------------------
$ngx->start;
is(clicks('gone', 10, 'g1'), 10, 'gone: 10 clicks charged');
$ngx->stop('QUIT');
write_campaigns([ capped('a'), capped('k'), capped('up'), $conv ]);
$ngx->start;
like($ngx->error_log_text, qr/tracker_state: 1 accounts dropped/, 'the start alone drops the deleted campaign');
write_campaigns([ capped('a'), capped('k'), capped('up'), capped('gone'), $conv ]);
$ngx->reload;
TrackerTest::wait_until(5, sub { defined counters('gone')->{spend_micros} });
is(counters('gone')->{spend_micros}, 0, 'created again: it starts at zero');
is(counters('a')->{spend_micros}, 1_000_000, 'the others are kept');

# --- reloads cannot add or remove tracker_state; nginx -t tells without it -----------------------
my $log_at = length $ngx->error_log_text;
$ngx->write_conf(http => http_conf(''));
$ngx->reload;
TrackerTest::wait_until(5, sub { substr($ngx->error_log_text, $log_at) =~ /cannot be added, removed or changed by a reload/ });
like(substr($ngx->error_log_text, $log_at), qr/\[emerg\].*"tracker_state" cannot be added, removed or changed by a reload; restart nginx/,
    'a reload that removes tracker_state is refused');
is(counters('a')->{spend_micros}, 1_000_000, 'the old configuration keeps serving');
# nginx -t writes to the error log given with -e (the tests' nginx command has one).
$log_at = length $ngx->error_log_text;
my ($rc) = $ngx->test_conf;
is($rc, 0, 'nginx -t without tracker_state: ok');
like(substr($ngx->error_log_text, $log_at), qr/\[notice\].*will not survive a restart; set "tracker_state"/,
    'nginx -t: a notice without tracker_state');
$ngx->write_conf(http => http_conf("tracker_state $STATE 1m;"));
$log_at = length $ngx->error_log_text;
($rc) = $ngx->test_conf;
is($rc, 0, 'nginx -t with tracker_state: ok');
unlike(substr($ngx->error_log_text, $log_at), qr/will not survive a restart/, 'nginx -t: no notice with it');
$ngx->stop('QUIT');

# --- a corrupt state file ------------------------------------------------------------------------
TrackerTest::write_file($STATE, "this is not a state file\n" x 400);
$ngx->start;
like($ngx->error_log_text, qr/\[error\].*"tracker_state" "\Q$STATE\E" is not a valid state file \(not a tracker state file \(bad magic\)\): moved aside to "\Q$STATE\E\.corrupt-\d+"/,
    'a corrupt state file: [error] naming it and where it went');
my @aside = glob("$STATE.corrupt-*");
is(scalar @aside, 1, 'moved aside');
is(TrackerTest::read_file($aside[0]), "this is not a state file\n" x 400, 'its bytes kept');
is(counters('a')->{spend_micros}, 0, 'a new state file: counters at zero (rebuild: docs/stats.md)');
is(clicks('a', 3, 'new'), 3, 'and charging works');
$ngx->stop('QUIT');

# --- the recovery: accounts rebuilt from the stored events ----------------------------------------
my $more = drain();
$cost{ $_->{campaign} } += $_->{cost_micros} // 0 for @$more;
my $out;
my @dirs = map { ('--events', $_) } sort glob("$WORK/drain-*");
($rc, $out) = TrackerTest::run_cmd(TrackerTest::shipper(), 'accounts', 'rebuild', '--state', $STATE,
    '--campaigns', $ENV{TEST_NGINX_CAMPAIGNS}, @dirs);
is($rc, 0, 'tracker-shipper accounts rebuild') or diag $out;
like($out, qr/^\d+ accounts written to \Q$STATE\E from \d+ events$/m, 'it says what it wrote');
$ngx->start;
is(counters('a')->{spend_micros}, $cost{a}, 'a: the spend of every stored event (the cap, plus the 3 charged on the new file)');
is($cost{a}, 1_030_000, '(that is 1.03)');
is(counters('a')->{clicks}, 80 + 80 + 3, 'a: the clicks seen');
is(counters('k')->{spend_micros}, 1_000_000, 'k: back at its cap');
is(counters('conv')->{spend_micros}, 2_000_000, 'conv: one conversion');
is(clicks('k', 5, 'k-after-rebuild'), 0, 'k: the cap holds after the rebuild');
($rc, $out) = TrackerTest::run_cmd(TrackerTest::shipper(), 'accounts', 'rebuild', '--state', $STATE, @dirs);
isnt($rc, 0, 'rebuild refused while nginx has the file');
like($out, qr/open in another process \(nginx\): stop nginx/, 'and says why');
$ngx->stop('QUIT');

# --- a full accounts table ------------------------------------------------------------------------
{
    my $small = TrackerTest::Nginx->new(http => http_conf("tracker_state $WORK/state/small 7k;"));
    write_campaigns([ map { capped("c$_") } 1 .. 17 ]);
    my ($rc) = $small->test_conf;
    isnt($rc, 0, 'nginx -t: 17 campaigns do not fit a state file of 16 accounts');
    like($small->error_log_text, qr/\[emerg\].*"tracker_state" file is full \(16 of its 16 accounts used/,
        'and the [emerg] says the state file is full');
}

done_testing();
