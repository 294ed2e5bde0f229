# Faults in the files the module touches (issue 20, docs/failure-modes.md), with an nginx of
# our own (master + 2 workers, 127.0.0.1 only). Each creates the fault and checks that nginx
# says why in an [emerg] (once), and that a running nginx keeps serving, tracking and
# non-tracking locations alike:
# - the ring on a tmpfs too small for it: `nginx -t` and the start fail naming the path, the
#   size asked and the space free; a ring that fits serves, and filling it to the brim kills no
#   worker (no SIGBUS: its space was reserved); a reload to a new ring that does not fit fails
#   and the old one keeps serving;
# - the ring's directory read-only (a read-only tmpfs: root ignores permission bits), at start
#   and at reload;
# - the ring file truncated, or replaced by another file, behind nginx's back: the next reload
#   fails saying so; once it is removed, a reload creates a new ring;
# - the campaigns file removed, or replaced by a directory, then a reload: the old campaigns
#   keep serving;
# - permission bits (nginx as root without CAP_DAC_OVERRIDE): a ring in another user's
#   directory, the campaigns file and the ring made unreadable before a reload;
# - the duplicates zone overflowed: evictions counted, every request answered;
# - the shipper's output filesystem full while it runs (it retries, then stores every event
#   once), and full when it starts (it exits non-zero saying why; the events wait in the ring).
# The tmpfs mounts need root and CAP_SYS_ADMIN; where mounting is not permitted those parts
# are skipped with the reason printed.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use File::Path qw(make_path);
use POSIX ();
use Time::HiRes qw(sleep);

my $WORK = $ENV{TEST_NGINX_WORKDIR};

# --- mounts ------------------------------------------------------------------------------------
my @MOUNTED;
my $MOUNT_ERROR;

# Mounts a tmpfs with `opts` on $WORK/$name; returns the directory, or undef (reason in
# $MOUNT_ERROR) when mounting is not permitted.
sub tmpfs {
    my ($name, $opts) = @_;
    my $dir = "$WORK/$name";
    make_path($dir);
    my $out = `mount -t tmpfs -o '$opts' tmpfs '$dir' 2>&1`;
    if ($? != 0) {
        chomp($MOUNT_ERROR = $out || "mount exited with status " . ($? >> 8));
        return undef;
    }
    push @MOUNTED, $dir;
    return $dir;
}

END {
    return unless $$ == $TrackerTest::PARENT_PID;
    # nginx first (it maps the ring), then the mounts; lazily if something still holds one.
    $_->stop('TERM') for @TrackerTest::Nginx::RUNNING;
    for my $dir (reverse @MOUNTED) {
        system('umount', $dir) == 0 or system('umount', '-l', $dir);
    }
}

# --- nginx -------------------------------------------------------------------------------------
write_campaigns([{ id => 'a', status => 'active', landing_url => 'https://a.example.com/v1' }]);

sub http_conf {
    my ($ring, $size, %o) = @_;
    my $full = $o{full} ? "tracker_ring_full $o{full};" : '';
    return <<"HTTP";
    tracker_ring      $ring $size;
    tracker_campaigns \@CAMPAIGNS\@ zone=campaigns:1m;
    server {
        listen \@LISTEN\@;
        tracker_dimension t \$arg_t;
        tracker_dimension pad \$arg_pad;
        $full
        location = /i { tracker impression; }
        location = /c { tracker click; }
        location = /plain { return 200 "plain\\n"; }
    }
HTTP
}

# The log's text since `$from` (a length of it).
sub log_since { my ($ngx, $from) = @_; return substr($ngx->error_log_text, $from) }

sub count_matches { my ($text, $re) = @_; my $n = () = $text =~ /$re/g; return $n }

# Every location answers as when nothing is wrong: the pixel, the click, a plain location.
sub serves {
    my ($ngx, $what, $tag) = @_;
    my $i = eval { $ngx->get("/i?cid=a&t=$tag") };
    ok($i && $i->{status} == 200 && $i->{body} eq gif_bytes(), "$what: the pixel answers its GIF");
    my $c = eval { $ngx->get("/c?cid=a&t=$tag") };
    is($c && $c->{headers}{location}, 'https://a.example.com/v1', "$what: the click redirects");
    my $p = eval { $ngx->get('/plain') };
    is($p && $p->{body}, "plain\n", "$what: a non-tracking location serves");
}

# A reload that must fail: the same master and as many workers keep serving; returns the log
# written by the reload.
sub failed_reload {
    my ($ngx, $what, $emerg) = @_;
    my ($master, $workers) = ($ngx->master_pid, $ngx->worker_pids);
    my $from = length $ngx->error_log_text;
    $ngx->reload;
    my $log = wait_until(10, sub { my $t = log_since($ngx, $from); $t =~ /\[emerg\]/ ? $t : undef });
    ok($log, "$what: the failed reload is in the error log") or return '';
    sleep 0.3;    # anything more the reload would log, and new workers if it had not failed
    $log = log_since($ngx, $from);
    like($log, $emerg, "$what: the [emerg] says why");
    is(count_matches($log, qr/\[emerg\]/), 1, "$what: said once");
    is($ngx->master_pid, $master, "$what: same master");
    is_deeply($ngx->worker_pids, $workers, "$what: the same workers keep serving");
    return $log;
}

# --- the ring on a tmpfs too small for it -----------------------------------------------------
subtest 'ring on a filesystem too small for it' => sub {
    my $small = tmpfs('small', 'size=1m,mode=0755');
    plan skip_all => "cannot mount a tmpfs: $MOUNT_ERROR" unless $small;

    my $ngx = TrackerTest::Nginx->new(http => http_conf("$small/r.ring", '4m'), workers => 2);
    my ($rc, $out) = $ngx->test_conf;
    isnt($rc, 0, 'nginx -t fails');
    like($out, qr{\[emerg\].*"tracker_ring" "\Q$small\E/r\.ring".*cannot reserve 4198400 bytes \(4\.0 MiB\)}, 'naming the path and the size asked');
    like($out, qr/No space left on device.*space free on its filesystem: 1048576 bytes \(1\.0 MiB\)/, 'the cause and the space free');
    ($rc, $out) = TrackerTest::run_cmd($ngx->nginx_cmd);
    isnt($rc, 0, 'nginx does not start');
    push @TrackerTest::Nginx::RUNNING, $ngx if $rc == 0;    # stopped at the end if it did
    ok(!wait_until(1, sub { $ngx->master_pid }), 'no master left running');
    like($out, qr/\[emerg\].*cannot reserve 4198400 bytes/, 'the start says why');
    is(-s "$small/r.ring", 0, 'the refused ring holds no space');

    # A ring that fits (256k of data) serves, and filling it kills no worker.
    $ngx->write_conf(http => http_conf("$small/r.ring", '256k', full => 503));
    $ngx->start;
    my $workers = $ngx->worker_pids;
    serves($ngx, 'a ring that fits', 'fits');
    my $client = $ngx->client;
    my $log_from = length $ngx->error_log_text;
    my ($ok, $full, $other) = (0, 0, 0);
    my $pad = 'p' x 400;
    for (1 .. 5000) {
        my $r = $client->get("/i?cid=a&t=fill&pad=$pad");
        $r->{status} == 200 ? $ok++ : $r->{status} == 503 ? $full++ : $other++;
        last if $full >= 20;
    }
    $client->close;
    ok($ok > 300, "$ok events written into the 256k ring");
    is($full, 20, 'then the full ring answers 503 (tracker_ring_full 503)');
    is($other, 0, 'no other answer');
    my $h = ring_header("$small/r.ring");
    cmp_ok($h->{producer_pos} - $h->{consumer_pos}, '>', 3 * 256 * 1024 / 4, 'the ring is (nearly) full');
    cmp_ok($h->{dropped_full_total}, '>=', 20, 'every drop counted');
    is_deeply($ngx->worker_pids, $workers, 'no worker died filling the ring');
    unlike($ngx->error_log_text, qr/exited on signal/, 'no worker exited on a signal');
    my @lines = split /\n/, log_since($ngx, $log_from);
    cmp_ok(scalar @lines, '<', 5, 'the error log is not written per request') or diag "@lines[0 .. 4]";
    my $p = $ngx->get('/plain');
    is($p->{body}, "plain\n", 'a non-tracking location still serves');

    # A reload to a bigger ring elsewhere on the small filesystem fails; the old ring serves.
    my $written = ring_header("$small/r.ring")->{written_total};
    drain(ring => "$small/r.ring");    # room again in the old ring
    $ngx->write_conf(http => http_conf("$small/big.ring", '4m'));
    my $log = failed_reload($ngx, 'reload to a ring that does not fit',
        qr{\[emerg\].*"tracker_ring" "\Q$small\E/big\.ring".*cannot reserve 4198400 bytes.*space free on its filesystem});
    serves($ngx, 'after the failed reload', 'after-big');
    is(ring_header("$small/r.ring")->{written_total}, $written + 2, 'into the old ring');
    is(-s "$small/big.ring", 0, 'the refused ring holds no space');
    $ngx->stop;
};

# --- the ring's directory read-only -----------------------------------------------------------
subtest "ring's directory read-only" => sub {
    my $ro = tmpfs('ro', 'size=1m,ro');
    plan skip_all => "cannot mount a tmpfs: $MOUNT_ERROR" unless $ro;

    my $ngx = TrackerTest::Nginx->new(http => http_conf("$ro/r.ring", '1m'), workers => 2);
    my ($rc, $out) = $ngx->test_conf;
    isnt($rc, 0, 'at start: nginx -t fails');
    like($out, qr{\[emerg\].*"tracker_ring" "\Q$ro\E/r\.ring".*Read-only file system}, 'naming the path and why');

    $ngx->write_conf(http => http_conf("$WORK/rw.ring", '1m'));
    $ngx->start;
    serves($ngx, 'a writable ring', 'rw');
    $ngx->write_conf(http => http_conf("$ro/r.ring", '1m'));
    failed_reload($ngx, 'reload to a read-only directory', qr{\[emerg\].*"tracker_ring" "\Q$ro\E/r\.ring".*Read-only file system});
    serves($ngx, 'after the failed reload', 'after-ro');
    $ngx->stop;
};

# --- the ring file damaged behind nginx's back ------------------------------------------------
subtest 'ring file truncated or replaced behind nginx\'s back, then a reload' => sub {
    my $ring = "$WORK/damaged.ring";
    my $ngx = TrackerTest::Nginx->new(http => http_conf($ring, '1m'), workers => 2);
    $ngx->start;
    serves($ngx, 'before', 'before-damage');
    # Truncated (an operator's mistake): no tracking request now, a worker storing past the
    # new end would die of SIGBUS (docs/failure-modes.md says not to do this).
    truncate($ring, 8192) or die "truncate $ring: $!";
    failed_reload($ngx, 'ring truncated', qr{\[emerg\].*"tracker_ring" "\Q$ring\E".*truncated tracker ring \(8192 bytes.*remove it});
    is($ngx->get('/plain')->{body}, "plain\n", 'ring truncated: a non-tracking location serves');

    # Replaced by a file that is not a ring: refused, never overwritten.
    unlink $ring or die "unlink $ring: $!";
    write_file($ring, "not a ring\n" x 1000);
    failed_reload($ngx, 'ring replaced by another file', qr{\[emerg\].*"tracker_ring" "\Q$ring\E".*is not a tracker ring});
    is(read_file($ring), "not a ring\n" x 1000, 'the other file is left untouched');

    # Removed: the reload creates a new ring and the new workers write into it.
    unlink $ring or die "unlink $ring: $!";
    my $from = length $ngx->error_log_text;
    $ngx->reload;
    ok(wait_until(10, sub { -s $ring }), 'after removing it, a reload creates a new ring');
    my $new = wait_until(10, sub {
        my $r = eval { $ngx->get('/i?cid=a&t=new-ring') };
        $r && $r->{status} == 200 && ring_header($ring)->{written_total} > 0;
    });
    ok($new, 'the new workers write into the new ring');
    unlike(log_since($ngx, $from), qr/\[(?:emerg|alert|crit)\]/, 'no error at that reload');
    $ngx->stop;
};

# --- the campaigns file unreadable ------------------------------------------------------------
subtest 'campaigns file removed or unreadable, then a reload' => sub {
    my $ngx = TrackerTest::Nginx->new(http => http_conf("$WORK/c.ring", '1m'), workers => 2);
    $ngx->start;
    serves($ngx, 'before', 'before');
    my $file = $ENV{TEST_NGINX_CAMPAIGNS};

    unlink $file or die "unlink $file: $!";
    failed_reload($ngx, 'campaigns file removed', qr{\[emerg\].*tracker_campaigns.*\Q$file\E.*No such file});
    serves($ngx, 'campaigns file removed', 'removed');

    mkdir $file or die "mkdir $file: $!";    # root reads any file: a directory cannot be read
    failed_reload($ngx, 'campaigns file replaced by a directory', qr{\[emerg\].*tracker_campaigns.*\Q$file\E.*directory}i);
    serves($ngx, 'campaigns file replaced by a directory', 'dir');
    rmdir $file;

    write_campaigns([{ id => 'a', status => 'active', landing_url => 'https://a.example.com/v1' }]);
    $ngx->stop;
};

# --- permissions: root without CAP_DAC_OVERRIDE, so that permission bits apply ----------------
# The tests run as root, which reads and writes any file; nginx started under setpriv with
# CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH out of its bounding set meets permission bits as a
# non-root master would.
my @NO_DAC = ('setpriv', '--bounding-set', '-dac_override,-dac_read_search', '--');
my $NO_DAC_ERROR = `@NO_DAC true 2>&1`;
$NO_DAC_ERROR = $? == 0 ? undef : ($NO_DAC_ERROR || "setpriv exited with status " . ($? >> 8));

subtest 'permissions: a directory of another user, an unreadable campaigns file and ring' => sub {
    plan skip_all => "cannot drop CAP_DAC_OVERRIDE with setpriv: $NO_DAC_ERROR" if $NO_DAC_ERROR;
    my $other = "$WORK/other-user";
    make_path($other);
    my ($uid, $gid) = (getpwnam('nobody'))[2, 3];
    chown $uid, $gid, $other or die "chown $other: $!";
    chmod 0700, $other or die "chmod $other: $!";

    my $ngx = TrackerTest::Nginx->new(http => http_conf("$other/r.ring", '1m'), workers => 2, wrap => \@NO_DAC);
    my ($rc, $out) = $ngx->test_conf;
    isnt($rc, 0, "a ring in another user's directory: nginx -t fails");
    like($out, qr{\[emerg\].*"tracker_ring" "\Q$other\E/r\.ring".*Permission denied}, 'naming the path and why');

    my $ring = "$WORK/perm.ring";
    $ngx->write_conf(http => http_conf($ring, '1m'));
    $ngx->start;
    serves($ngx, 'a ring of its own', 'perm');
    my $file = $ENV{TEST_NGINX_CAMPAIGNS};
    chmod 0000, $file or die "chmod $file: $!";
    failed_reload($ngx, 'campaigns file unreadable', qr{\[emerg\].*tracker_campaigns.*\Q$file\E.*Permission denied});
    serves($ngx, 'campaigns file unreadable', 'perm-campaigns');
    chmod 0644, $file or die "chmod $file: $!";

    chmod 0000, $ring or die "chmod $ring: $!";
    failed_reload($ngx, 'ring file unreadable', qr{\[emerg\].*"tracker_ring" "\Q$ring\E".*Permission denied});
    serves($ngx, 'ring file unreadable', 'perm-ring');
    chmod 0660, $ring or die "chmod $ring: $!";
    $ngx->stop;
};

# --- the shipper's output filesystem full -----------------------------------------------------
subtest "shipper's output filesystem full, then space again" => sub {
    my $out = tmpfs('shipper-out', 'size=256k,mode=0755');
    plan skip_all => "cannot mount a tmpfs: $MOUNT_ERROR" unless $out;
    my $ring = "$WORK/s.ring";
    my $ngx = TrackerTest::Nginx->new(http => http_conf($ring, '8m'), workers => 2);
    $ngx->start;
    # 2000 events of 300 random characters each: far more than 256k, even gzipped.
    my @chars = ('A' .. 'Z', 'a' .. 'z', '0' .. '9');
    my $client = $ngx->client;
    my $served = 0;
    for my $i (1 .. 2000) {
        my $pad = "$i-" . join '', map { $chars[rand @chars] } 1 .. 300;
        $served++ if $client->get("/i?cid=a&t=sfull&pad=$pad")->{status} == 200;
    }
    is($served, 2000, 'every request served');

    my $log = "$WORK/shipper-full.log";
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', $log or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT or POSIX::_exit(127);
        exec($ENV{TEST_NGINX_SHIPPER}, '--ring', $ring, '--sink', 'file', '--dir', $out,
             '--flush-interval-ms', '200') or POSIX::_exit(127);
    }
    my $retrying = wait_until(20, sub {
        my $l = read_file($log) // '';
        $l =~ /No space left on device/ && $l =~ /retrying in/;
    });
    ok($retrying, 'the shipper meets the full filesystem and retries') or diag read_file($log);
    my $h = ring_header($ring);
    cmp_ok($h->{consumer_pos}, '<', $h->{producer_pos}, 'the events it could not store stay in the ring');
    serves($ngx, 'while the shipper cannot write', 'sfull-serving');

    system('mount', '-o', 'remount,size=32m', $out) == 0 or die "remount $out failed";
    my $more = 0;
    for my $i (2001 .. 2050) {
        $more++ if $client->get("/i?cid=a&t=sfull&pad=$i-after")->{status} == 200;
    }
    $client->close;
    my $caught_up = wait_until(60, sub { my $r = ring_header($ring); $r->{consumer_pos} == $r->{producer_pos} });
    ok($caught_up, 'once space returns the shipper catches up') or diag read_file($log);
    kill 'TERM', $pid;
    waitpid($pid, 0);
    is($? >> 8, 0, 'the shipper exits 0 on SIGTERM');

    my $events = TrackerTest::read_events($out);
    my %n;
    $n{ (split /-/, dim($_, 'pad'))[0] }++ for @{ events_tagged($events, 'sfull') };
    is(scalar(keys %n), $served + $more, 'every event stored') or diag "stored " . scalar(keys %n);
    is(scalar(grep { $_ != 1 } values %n), 0, 'each exactly once');
    my @tmp = grep { /\.tmp$/ } split /\n/, `find '$out' -type f`;
    is(scalar @tmp, 0, 'no temporary file left') or diag "@tmp";
    $ngx->stop;
};

# --- the duplicates zone full --------------------------------------------------------------------
subtest 'duplicates zone full' => sub {
    # 64k holds about 8,000 entries: 12,000 distinct conversions overflow it. A full bucket
    # pushes out its oldest entry and counts it; nothing fails, every request is answered.
    my $ngx = TrackerTest::Nginx->new(workers => 2, http => <<'HTTP');
    tracker_ring      @WORK@/dz.ring 8m;
    tracker_campaigns @CAMPAIGNS@ zone=campaigns:1m;
    tracker_duplicates_zone 64k window=1h;
    server {
        listen @LISTEN@;
        keepalive_requests 100000;
        tracker_dimension t $arg_t;
        location = /cv { tracker conversion response=empty; tracker_duplicates flag; }
        location = /stats { tracker_stats; }
        location = /plain { return 200 "plain\n"; }
    }
HTTP
    $ngx->start;
    my $client = $ngx->client;
    my $n = 12_000;
    my $answered = grep { $client->get("/cv?cid=a&t=dz&click_id=k$_")->{status} == 204 } 1 .. $n;
    is($answered, $n, "$n distinct conversions answered");
    is($client->get("/cv?cid=a&t=dz-again&click_id=k$n")->{status}, 204, 'the last one again');
    $client->close;
    my $p = $ngx->get('/stats?format=prometheus')->{body};
    my ($evicted) = $p =~ /^tracker_duplicate_evictions_total (\d+)$/m;
    cmp_ok($evicted // 0, '>=', $n - 8192, 'the overflow is counted as evictions') or diag $p;
    like($p, qr/^tracker_ring_events_duplicate_total\{type="conversion"\} 1$/m,
         'the last key is still known: its repeat is the one duplicate');
    is($ngx->get('/plain')->{body}, "plain\n", 'a non-tracking location serves');
    unlike($ngx->error_log_text, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg');
    $ngx->stop;
};

# --- the shipper's own files on a full filesystem -----------------------------------------------
subtest "shipper started on a full filesystem" => sub {
    my $full = tmpfs('shipper-full', 'size=64k,mode=0755');
    plan skip_all => "cannot mount a tmpfs: $MOUNT_ERROR" unless $full;
    system("dd if=/dev/zero of='$full/filler' bs=4k count=64 2>/dev/null");    # fills it: dd stops at ENOSPC
    my $ring = "$WORK/sf.ring";
    my $ngx = TrackerTest::Nginx->new(http => http_conf($ring, '1m'), workers => 1);
    $ngx->start;
    is($ngx->get("/i?cid=a&t=sf")->{status}, 200, 'an event in the ring');
    my ($rc, $out) = TrackerTest::run_cmd($ENV{TEST_NGINX_SHIPPER}, '--ring', $ring, '--sink', 'file',
                                          '--dir', "$full/events", '--once');
    isnt($rc, 0, 'the shipper exits non-zero');
    like($out, qr/No space left on device/, 'saying why');
    my $h = ring_header($ring);
    cmp_ok($h->{consumer_pos}, '<', $h->{producer_pos}, 'the event stays in the ring');
    unlink "$full/filler";
    ($rc, $out) = TrackerTest::run_cmd($ENV{TEST_NGINX_SHIPPER}, '--ring', $ring, '--sink', 'file',
                                       '--dir', "$full/events", '--once');
    is($rc, 0, 'with space again, it ships') or diag $out;
    is(scalar @{ events_tagged(TrackerTest::read_events("$full/events"), 'sf') }, 1, 'the event, once');
    $ngx->stop;
};

done_testing();
