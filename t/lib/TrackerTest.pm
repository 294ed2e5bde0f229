package TrackerTest;

# Shared helpers of the nginx-tracker integration tests (t/010-*.t and up).
#
# Load it BEFORE Test::Nginx::Socket:
#
#     use FindBin; use lib "$FindBin::Bin/lib";
#     use TrackerTest;
#     use Test::Nginx::Socket 'no_plan';
#     use Test::More import => [qw(subtest explain cmp_ok)];   # what Test::Base does not export
#
# At load time it prepares the environment that Test::Nginx reads when it is loaded:
#   - the server listens on 127.0.0.1 only, on a free port of its own
#     (TEST_NGINX_SERVER_PORT="127.0.0.1:PORT", TEST_NGINX_CLIENT_PORT=PORT);
#   - a per-file server root, ${TEST_NGINX_SERVROOT}_<file> when scripts/test.sh names one,
#     else t/servroot_<file> (so test files never share one and may run in parallel);
#   - a per-file work directory (File::Temp) holding the ring and the campaigns file,
#     exposed as $TEST_NGINX_WORKDIR, $TEST_NGINX_RING and $TEST_NGINX_CAMPAIGNS for the
#     config sections (Test::Nginx expands $TEST_NGINX_* there); the server root is wiped
#     between blocks, the work directory is not, so the ring accumulates every block's events;
#   - defaults for TEST_NGINX_BINARY, TEST_NGINX_LOAD_MODULES and TEST_NGINX_SHIPPER.
# Set TRACKER_TEST_KEEP=1 to keep the work directories.
#
# After run_tests(), drain() runs the shipper once over the ring and returns the stored
# events (decoded NDJSON); ring_header() reads the ring's counters straight from the file
# (the layout is fixed by core/src/ring.rs) and shipper_stats() asks the shipper for them.
# TrackerTest::Nginx starts an nginx of its own (plain Test::More scripts), and
# TrackerTest::Client speaks HTTP/1.1 with keepalive to it.

use strict;
use warnings;

use Cwd qw(abs_path);
use Exporter 'import';
use File::Basename qw(basename dirname);
use File::Find ();
use File::Path qw(make_path);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use IO::Uncompress::Gunzip qw($GunzipError);
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);

our @EXPORT = qw(
    location_directives_refused
    write_file read_file write_campaigns drain shipper_stats ring_header
    events_tagged one_tagged dim has_flag flags_of read_log free_port wait_until
    gif_bytes kind_index browser_ua $BROWSER_UA
    journal_records durable_campaigns
);

# The User-Agent the test clients send unless told otherwise: a browser's, so that
# `tracker_bots` (default flag; an absent User-Agent is a bot's) leaves the events alone.
our $BROWSER_UA = 'Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0 tracker-test';

# A Test::Nginx block preprocessor: blocks without more_headers send $BROWSER_UA.
# Use: add_block_preprocessor(sub { browser_ua(shift) });
# For each directive text => error regex of %$bad: `nginx -t` of a tracker location holding it
# fails with that message.
sub location_directives_refused {
    my ($bad) = @_;
    for my $d (sort keys %$bad) {
        my $n = TrackerTest::Nginx->new(http => <<"HTTP");
    tracker_ring \@RING\@ 4m;
    server {
        listen \@LISTEN\@;
        location = /i { tracker impression; $d }
    }
HTTP
        my ($rc, $out) = $n->test_conf;
        Test::More::isnt($rc, 0, "$d: nginx -t fails");
        Test::More::like($out, $bad->{$d}, "$d: message");
    }
}

sub browser_ua {
    my $block = shift;
    $block->set_value('more_headers', "User-Agent: $BROWSER_UA") unless defined $block->more_headers;
}

our $ROOT = abs_path(dirname(abs_path(__FILE__)) . '/../..');
our $PARENT_PID = $$;
our ($WORK, $PORT);

# The 43-byte transparent GIF every pixel answers with (the bytes of src/response.rs).
sub gif_bytes {
    return "GIF89a\x01\x00\x01\x00\x80\x01\x00"
        . "\x00\x00\x00\xff\xff\xff"
        . "\x21\xf9\x04\x01\x00\x00\x01\x00"
        . "\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
        . "\x02\x02\x4c\x01\x00"
        . "\x3b";
}

# Counter slots of the ring header (event::Kind::index()).
my %KIND = (impression => 0, click => 1, conversion => 2, video => 3, custom => 4);
sub kind_index {
    my $k = shift;
    return $KIND{$k} if exists $KIND{$k};
    return $1 if $k =~ /^slot(\d+)$/;    # unnamed counter slots in `tracker-shipper stats`
    return $KIND{custom};
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                  Listen => 1, ReuseAddr => 1)
        or die "cannot bind 127.0.0.1:0: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

BEGIN {
    my $root = abs_path(dirname(abs_path(__FILE__)) . '/../..');
    # Test::Nginx unpacked by scripts/test-nginx.sh, if PERL5LIB does not already point at it.
    my $tn = "$root/.cache/test-nginx/usr/share/perl5";
    push @INC, $tn if -d $tn && !grep { $_ eq $tn } @INC;
}

{
    my $name = basename($0);
    $name =~ s/\.t$//;
    $name =~ s/[^A-Za-z0-9_.-]/_/g;

    $ENV{TEST_NGINX_BINARY}       ||= '/usr/sbin/nginx';
    $ENV{TEST_NGINX_LOAD_MODULES} ||= "$ROOT/target/release/libngx_http_tracker_module.so";
    $ENV{TEST_NGINX_SHIPPER}      ||= "$ROOT/target/release/tracker-shipper";

    $WORK = tempdir("tracker-$name-XXXXXX", TMPDIR => 1, CLEANUP => !$ENV{TRACKER_TEST_KEEP});
    $ENV{TEST_NGINX_WORKDIR}   = $WORK;
    $ENV{TEST_NGINX_RING}      = "$WORK/events.ring";
    $ENV{TEST_NGINX_CAMPAIGNS} = "$WORK/campaigns.json";

    # Only 127.0.0.1, on a port of our own: Test::Nginx writes "listen $ServerPort;".
    delete $ENV{TEST_NGINX_RANDOMIZE};
    $PORT = free_port();
    $ENV{TEST_NGINX_SERVER_PORT} = "127.0.0.1:$PORT";
    $ENV{TEST_NGINX_CLIENT_PORT} = $PORT;
    $ENV{TEST_NGINX_PORT}        = $PORT;
    $ENV{TEST_NGINX_STREAM_PORT} = free_port();
    $ENV{TEST_NGINX_TRACKER_PORT} = $PORT;
    # One server root per file (beside the one scripts/test.sh names, or under t/).
    $ENV{TEST_NGINX_SERVROOT} = $ENV{TEST_NGINX_SERVROOT}
        ? "$ENV{TEST_NGINX_SERVROOT}_$name" : "$ROOT/t/servroot_$name";
    $ENV{TEST_NGINX_NO_SHUFFLE} = 1;

    diag_env() if $ENV{TRACKER_TEST_VERBOSE};

    # Interrupted (Ctrl-C, a harness timeout, prove gone): exit through the END blocks, which
    # stop the nginx instances (Test::Nginx's and ours) and remove the work directory. A closed
    # pipe (prove gone, a client socket closed) becomes an error return instead of a kill.
    $SIG{PIPE} = 'IGNORE';
    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub {
            POSIX::_exit(1) if $$ != $PARENT_PID;    # forked clients: no END blocks
            print STDERR "# caught SIG$sig: stopping nginx and cleaning up\n";
            exit 1;
        };
    }
}

sub diag_env {
    print STDERR "# $_=$ENV{$_}\n" for grep { /^TEST_NGINX_/ } sort keys %ENV;
}

sub write_file {
    my ($path, $data) = @_;
    make_path(dirname($path));
    open my $fh, '>', $path or die "cannot write $path: $!";
    binmode $fh;
    print $fh $data;
    close $fh or die "cannot write $path: $!";
}

sub read_file {
    my ($path) = @_;
    open my $fh, '<', $path or return undef;
    binmode $fh;
    local $/;
    my $d = <$fh>;
    return defined $d ? $d : '';
}

# Writes a campaigns file: one object per line, so that line N of the file is campaign N-1.
sub write_campaigns {
    my ($list, $path) = @_;
    $path ||= $ENV{TEST_NGINX_CAMPAIGNS};
    my $json = JSON::PP->new->canonical;
    my $text = "[\n" . join(",\n", map { '  ' . $json->encode($_) } @$list) . "\n]\n";
    write_file($path, $text);
    return $path;
}

# The records of a campaign journal (core/src/journal.rs): a list of decoded payloads
# ({upsert => [...]} or {delete => [...]}); a torn tail is dropped, a bad record followed by a
# valid one dies (the tests expect none). Absent file: none.
sub journal_records {
    my ($path) = @_;
    my $b = read_file($path);
    return [] unless defined $b;
    require Compress::Zlib;
    my ($at, @out) = (0);
    while ($at + 20 <= length $b) {
        last unless substr($b, $at, 4) eq "\xF7TJ1";
        my ($len, $crc) = unpack('VV', substr($b, $at + 4, 8));
        last if $at + 20 + $len > length $b;
        my $payload = substr($b, $at + 12, $len);
        my ($len2) = unpack('V', substr($b, $at + 12 + $len, 4));
        last unless $len2 == $len && substr($b, $at + 16 + $len, 4) eq "\xF7tj1"
            && Compress::Zlib::crc32($payload) == $crc;
        push @out, JSON::PP->new->utf8->decode($payload);
        $at += 20 + $len;
    }
    return \@out;
}

# The campaigns as they are durable on disk: the campaigns file, then the records of its old
# journal and its journal, as id => object (what the next start loads). undef if the file is
# not a JSON array.
sub durable_campaigns {
    my ($path) = @_;
    $path ||= $ENV{TEST_NGINX_CAMPAIGNS};
    my $list = eval { JSON::PP->new->utf8->decode(read_file($path) // '') };
    return undef unless ref $list eq 'ARRAY';
    my %all = map { $_->{id} => $_ } @$list;
    for my $rec (map { @{ journal_records($_) } } "$path.journal.old", "$path.journal") {
        $all{ $_->{id} } = $_ for @{ $rec->{upsert} || [] };
        delete $all{$_} for @{ $rec->{delete} || [] };
    }
    return \%all;
}

sub shipper {
    my $s = $ENV{TEST_NGINX_SHIPPER};
    die "no shipper at $s (cargo build --release -p tracker-shipper)\n" unless -x $s;
    return $s;
}

sub run_cmd {
    my (@cmd) = @_;
    my $out = `@{[ join ' ', map { quote($_) } @cmd ]} 2>&1`;
    return ($? >> 8, $out, $?);
}

sub quote { my $s = shift; $s =~ s/'/'\\''/g; return "'$s'" }

# Runs the shipper once over the ring (default: $TEST_NGINX_RING) and returns the events it
# wrote, as hashrefs (the NDJSON lines), in file order. Each drain gets a fresh directory;
# the consumer cursor advances, so a second drain returns only newer events.
my $drains = 0;
sub drain {
    my (%o) = @_;
    my $ring = $o{ring} || $ENV{TEST_NGINX_RING};
    my $dir = $o{dir} || "$WORK/drain-" . (++$drains);
    make_path($dir);
    my ($rc, $out) = run_cmd(shipper(), '--ring', $ring, '--sink', 'file', '--dir', $dir, '--once');
    die "shipper --once failed (exit $rc):\n$out" if $rc != 0;
    return read_events($dir);
}

# Reads every type=*/date=*/hour=*/*.ndjson.gz file under $dir (the committed files).
sub read_events {
    my ($dir) = @_;
    my @files;
    File::Find::find({ no_chdir => 1, wanted => sub {
        push @files, $File::Find::name
            if m{/type=[^/]+/date=[^/]+/hour=[^/]+/[^/]+\.ndjson\.gz$} && -f $_;
    } }, $dir);
    my $json = JSON::PP->new->utf8;
    my @events;
    for my $f (sort @files) {
        my $z = IO::Uncompress::Gunzip->new($f, MultiStream => 1)
            or die "gunzip $f: $GunzipError";
        my $n = 0;
        while (defined(my $line = $z->getline)) {
            $n++;
            next if $line =~ /^\s*$/;
            my $ev = eval { $json->decode($line) };
            die "$f line $n is not JSON ($@): $line" unless ref $ev eq 'HASH';
            my ($type_dir) = $f =~ m{/type=([^/]+)/};
            $ev->{_file} = $f;
            $ev->{_type_dir} = $type_dir;
            push @events, $ev;
        }
        $z->close;
    }
    return \@events;
}

# The ring's header counters, read from the file: layout of core/src/ring.rs (native endian).
sub ring_header {
    my ($ring) = @_;
    $ring ||= $ENV{TEST_NGINX_RING};
    open my $fh, '<', $ring or die "cannot open $ring: $!";
    binmode $fh;
    my $n = read($fh, my $buf, 1024);
    die "short ring header in $ring" unless $n && $n == 1024;
    close $fh;
    my $u64 = sub { unpack('Q', substr($buf, $_[0], 8)) };
    my $arr = sub { my $off = shift; [ map { $u64->($off + 8 * $_) } 0 .. 7 ] };
    my %h = (
        magic => substr($buf, 0, 8),
        version => unpack('L', substr($buf, 8, 4)),
        data_size => $u64->(16),
        producer_pos => $u64->(64),
        consumer_pos => $u64->(128),
        written => $arr->(192),
        dropped_full => $arr->(256),
        dropped_too_large => $arr->(320),
        rejected => $arr->(384),
        abandoned => $u64->(448),
        duplicates => $arr->(640),
    );
    # Requests refused as invalid, by reason (core/src/limits.rs, in index order).
    my @reasons = qw(query_too_long too_many_args value_too_long invalid_campaign invalid_click_id
                     invalid_value invalid_video_event body_too_large);
    $h{invalid} = { map { $reasons[$_] => $u64->(512 + 8 * $_) } 0 .. $#reasons };
    for my $c (qw(written dropped_full dropped_too_large rejected duplicates)) {
        my $t = 0;
        $t += $_ for @{ $h{$c} };
        $h{"${c}_total"} = $t;
    }
    return \%h;
}

# `tracker-shipper stats --ring RING`, normalized to the shape of ring_header():
# { written => [8 per-kind counts], dropped_full => [...], dropped_too_large => [...],
#   rejected => [...], <counter>_total => N, abandoned => N, raw => the JSON }.
# The shipper prints each counter as an object {"impression": N, ..., "custom": N, "total": N}
# (unnamed slots as "slotN" when not zero).
sub shipper_stats {
    my ($ring) = @_;
    $ring ||= $ENV{TEST_NGINX_RING};
    my $err = "$WORK/stats.stderr";
    my $out = `@{[ join ' ', map { quote($_) } shipper(), 'stats', '--ring', $ring ]} 2>'$err'`;
    my $rc = $? >> 8;
    die "tracker-shipper stats failed (exit $rc): " . (read_file($err) // '') if $rc != 0;
    my $j = eval { JSON::PP->new->decode($out) };
    die "tracker-shipper stats printed no JSON ($@): $out" unless ref $j eq 'HASH';
    my %s = (raw => $j, abandoned => $j->{abandoned});
    $s{invalid} = $j->{invalid};
    for my $c (qw(written dropped_full dropped_too_large rejected duplicates)) {
        my $v = $j->{$c};
        die "tracker-shipper stats: \"$c\" is not an object: $out" unless ref $v eq 'HASH';
        my @a = (0) x 8;
        for my $k (grep { $_ ne 'total' } keys %$v) {
            $a[kind_index($k)] += $v->{$k};
        }
        $s{$c} = \@a;
        my $t = 0;
        $t += $_ for @a;
        die "tracker-shipper stats: $c total $v->{total} is not the sum $t" if ($v->{total} // -1) != $t;
        $s{"${c}_total"} = $t;
    }
    return \%s;
}

# Events whose dimension "t" (the test tag every request of the suite carries) is $tag.
sub events_tagged {
    my ($events, $tag) = @_;
    return [ grep { defined dim($_, 't') && dim($_, 't') eq $tag } @$events ];
}

# The one event of a tag (undef, with a diagnostic, when there is not exactly one).
sub one_tagged {
    my ($events, $tag) = @_;
    my $m = events_tagged($events, $tag);
    if (@$m != 1) {
        Test::More::diag("expected 1 event tagged t=$tag, found " . scalar(@$m));
        return undef;
    }
    return $m->[0];
}

sub dim {
    my ($ev, $name) = @_;
    my $d = $ev->{dims};
    return undef unless ref $d;
    return $d->{$name} if ref $d eq 'HASH';
    if (ref $d eq 'ARRAY') {   # [[name, value], ...]
        for my $p (@$d) { return $p->[1] if ref $p eq 'ARRAY' && $p->[0] eq $name }
    }
    return undef;
}

sub flags_of { my $ev = shift; return [ sort @{ $ev->{flags} || [] } ] }
sub has_flag { my ($ev, $f) = @_; return scalar grep { $_ eq $f } @{ $ev->{flags} || [] } }

sub read_log {
    my ($path) = @_;
    my $t = read_file($path);
    return [] unless defined $t;
    return [ split /\n/, $t ];
}

# Polls $cond every 50 ms for up to $secs seconds; returns its last value.
sub wait_until {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (1) {
        my $v = $cond->();
        return $v if $v || time > $deadline;
        sleep 0.05;
    }
}

# ---------------------------------------------------------------------------------------------
# An HTTP/1.1 client with keepalive, enough for nginx's answers (Content-Length bodies).
# ---------------------------------------------------------------------------------------------
package TrackerTest::Client;

use IO::Socket::INET;

sub new {
    my ($class, $port, %o) = @_;
    my $self = bless { port => $port, host => $o{host} || 'localhost', timeout => $o{timeout} || 5 }, $class;
    return $self;
}

sub _connect {
    my ($self) = @_;
    return $self->{sock} if $self->{sock};
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Proto => 'tcp',
                                  Timeout => $self->{timeout})
        or die "cannot connect to 127.0.0.1:$self->{port}: $!";
    $s->autoflush(1);
    $self->{buf} = '';
    return $self->{sock} = $s;
}

sub close { my $self = shift; close $self->{sock} if $self->{sock}; delete $self->{sock} }

sub _fill {
    my ($self) = @_;
    my $s = $self->{sock};
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    my $n = select(my $rout = $rin, undef, undef, $self->{timeout});
    die "timeout reading from 127.0.0.1:$self->{port}\n" unless $n && $n > 0;
    my $r = sysread($s, my $chunk, 65536);
    die "read error: $!\n" unless defined $r;
    return 0 if $r == 0;
    $self->{buf} .= $chunk;
    return $r;
}

# request(METHOD, URI, headers => {..}, body => STR, close => 1)
# Returns { status, reason, headers => { lc name => value (", "-joined) }, header_list, raw_headers, body }.
sub request {
    my ($self, $method, $uri, %o) = @_;
    for my $attempt (1, 2) {
        my $res = eval { $self->_request($method, $uri, %o) };
        return $res if $res;
        my $err = $@;
        $self->close;
        die $err if $attempt == 2 || $err !~ /^(?:closed|read error)/;
    }
}

sub _request {
    my ($self, $method, $uri, %o) = @_;
    my $s = $self->_connect;
    my $body = defined $o{body} ? $o{body} : '';
    # A browser's User-Agent unless one is given (`'User-Agent' => undef`: none), so that
    # `tracker_bots` (default flag) does not take the tests' requests for a bot's.
    my $h = { 'User-Agent' => $TrackerTest::BROWSER_UA, %{ $o{headers} || {} } };
    my $req = "$method $uri HTTP/1.1\r\nHost: $self->{host}\r\n";
    $req .= "$_: $h->{$_}\r\n" for grep { defined $h->{$_} } sort keys %$h;
    $req .= "Content-Length: " . length($body) . "\r\n" if length $body || $method eq 'POST' || $method eq 'PUT';
    $req .= "Connection: close\r\n" if $o{close};
    $req .= "\r\n$body";
    defined syswrite($s, $req) or die "closed: write failed: $!\n";
    my $hdr_end;
    while (($hdr_end = index($self->{buf}, "\r\n\r\n")) < 0) {
        $self->_fill or die "closed before response headers\n";
    }
    my $raw = substr($self->{buf}, 0, $hdr_end + 4, '');
    my ($status_line, @lines) = split /\r\n/, substr($raw, 0, $hdr_end);
    my ($code, $reason) = $status_line =~ m{^HTTP/1\.[01] (\d{3}) ?(.*)$} or die "bad status line: $status_line\n";
    my (%headers, @list);
    for my $l (@lines) {
        my ($k, $v) = $l =~ /^([^:]+):\s*(.*)$/ or next;
        push @list, [$k, $v];
        my $lk = lc $k;
        $headers{$lk} = exists $headers{$lk} ? "$headers{$lk}, $v" : $v;
    }
    my $resp_body = '';
    my $no_body = $method eq 'HEAD' || $code == 204 || $code == 304 || $code < 200;
    if (!$no_body) {
        if (defined $headers{'content-length'}) {
            my $len = $headers{'content-length'};
            while (length $self->{buf} < $len) {
                $self->_fill or die "closed in the body\n";
            }
            $resp_body = substr($self->{buf}, 0, $len, '');
        } elsif (($headers{'transfer-encoding'} || '') =~ /chunked/i) {
            while (1) {
                my $e;
                while (($e = index($self->{buf}, "\r\n")) < 0) { $self->_fill or die "closed in chunks\n" }
                my $size = hex substr($self->{buf}, 0, $e + 2, '');
                if ($size == 0) {
                    while (index($self->{buf}, "\r\n") < 0) { $self->_fill or last }
                    substr($self->{buf}, 0, index($self->{buf}, "\r\n") + 2, '') if index($self->{buf}, "\r\n") >= 0;
                    last;
                }
                while (length $self->{buf} < $size + 2) { $self->_fill or die "closed in a chunk\n" }
                $resp_body .= substr($self->{buf}, 0, $size, '');
                substr($self->{buf}, 0, 2, '');
            }
        } else {
            1 while $self->_fill;
            $resp_body = $self->{buf};
            $self->{buf} = '';
            $self->close;
        }
    }
    if ($o{close} || ($headers{connection} || '') =~ /close/i) {
        $self->close;
    }
    return { status => $code, reason => $reason, headers => \%headers, header_list => \@list,
             raw_headers => $raw, body => $resp_body };
}

sub get { my ($self, $uri, %o) = @_; return $self->request('GET', $uri, %o) }

# ---------------------------------------------------------------------------------------------
# An nginx of our own, for the plain Test::More scripts: its own prefix, 127.0.0.1 only.
# ---------------------------------------------------------------------------------------------
package TrackerTest::Nginx;

use File::Path qw(make_path);
use POSIX ();
use Time::HiRes qw(sleep time);

our @RUNNING;

# new(http => "...http block body...", workers => 2, prefix => DIR, log_level => 'notice')
# In `http`, @PORT@, @PREFIX@, @RING@, @CAMPAIGNS@, @WORK@ and @LISTEN@ ("127.0.0.1:PORT")
# are replaced.
sub new {
    my ($class, %o) = @_;
    my $self = bless {
        workers => 1, log_level => 'notice', %o,
    }, $class;
    $self->{prefix} ||= "$TrackerTest::WORK/nginx-" . int(rand(1e9));
    $self->{port}   ||= TrackerTest::free_port();
    make_path("$self->{prefix}/logs", "$self->{prefix}/conf", "$self->{prefix}/tmp");
    $self->write_conf;
    return $self;
}

sub port      { $_[0]{port} }
sub prefix    { $_[0]{prefix} }
sub conf_file { "$_[0]{prefix}/conf/nginx.conf" }
sub error_log { "$_[0]{prefix}/logs/error.log" }
sub pid_file  { "$_[0]{prefix}/logs/nginx.pid" }

sub expand {
    my ($self, $text) = @_;
    my %v = (
        PORT => $self->{port}, PREFIX => $self->{prefix}, WORK => $TrackerTest::WORK,
        RING => $ENV{TEST_NGINX_RING}, CAMPAIGNS => $ENV{TEST_NGINX_CAMPAIGNS},
        LISTEN => "127.0.0.1:$self->{port}",
    );
    $text =~ s/\@([A-Z]+)\@/exists $v{$1} ? $v{$1} : "\@$1\@"/ge;
    return $text;
}

# (Re)writes conf/nginx.conf; `http` may be given to change the http block.
sub write_conf {
    my ($self, %o) = @_;
    $self->{$_} = $o{$_} for keys %o;
    my $p = $self->{prefix};
    my $http = $self->expand($self->{http} || '');
    my $user = $> == 0 ? "user root;\n" : '';
    my $modules = join '', map { "load_module $_;\n" } grep { length } split /\s+/, $ENV{TEST_NGINX_LOAD_MODULES};
    my $conf = <<"CONF";
$modules${user}worker_processes $self->{workers};
master_process on;
daemon on;
error_log $p/logs/error.log $self->{log_level};
pid $p/logs/nginx.pid;
events {
    worker_connections 1024;
    accept_mutex off;
}
http {
    access_log off;
    default_type text/plain;
    client_body_temp_path $p/tmp/body;
    proxy_temp_path $p/tmp/proxy;
    fastcgi_temp_path $p/tmp/fastcgi;
    uwsgi_temp_path $p/tmp/uwsgi;
    scgi_temp_path $p/tmp/scgi;
$http
}
CONF
    TrackerTest::write_file($self->conf_file, $conf);
}

# `wrap => [COMMAND...]` (new) runs nginx under that command (e.g. setpriv).
sub nginx_cmd {
    my ($self, @args) = @_;
    return (@{ $self->{wrap} || [] }, $ENV{TEST_NGINX_BINARY}, '-p', "$self->{prefix}/", '-c',
            $self->conf_file, '-e', $self->error_log, @args);
}

# nginx -t: (exit code, output).
sub test_conf {
    my ($self) = @_;
    my ($rc, $out) = TrackerTest::run_cmd($self->nginx_cmd('-t'));
    return ($rc, $out);
}

sub start {
    my ($self) = @_;
    my ($rc, $out) = TrackerTest::run_cmd($self->nginx_cmd);
    die "nginx failed to start (exit $rc): $out\n" . $self->error_log_text if $rc != 0;
    push @RUNNING, $self unless grep { $_ == $self } @RUNNING;
    my $pid = TrackerTest::wait_until(5, sub { $self->master_pid });
    die "nginx wrote no pid file\n" unless $pid;
    my $up = TrackerTest::wait_until(5, sub {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port}, Proto => 'tcp');
        close $s if $s;
        $s ? 1 : 0;
    });
    die "nginx does not listen on 127.0.0.1:$self->{port}\n" unless $up;
    TrackerTest::wait_until(5, sub { scalar(@{ $self->worker_pids }) >= $self->{workers} });
    return $self;
}

sub master_pid {
    my ($self) = @_;
    my $t = TrackerTest::read_file($self->pid_file);
    return undef unless defined $t && $t =~ /(\d+)/;
    my $pid = $1;
    return kill(0, $pid) ? $pid : undef;
}

# Pids of the master's children that are workers ("nginx: worker process").
sub worker_pids {
    my ($self) = @_;
    my $m = $self->master_pid or return [];
    my @w;
    opendir my $d, '/proc' or return [];
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $stat = TrackerTest::read_file("/proc/$pid/stat");
        next unless defined $stat && $stat =~ /^\d+ \(.*\) \S (\d+)/;
        next unless $1 == $m;
        my $cmd = TrackerTest::read_file("/proc/$pid/cmdline") || '';
        push @w, $pid if $cmd =~ /worker process/ && $cmd !~ /shutting down/;
    }
    closedir $d;
    return [ sort { $a <=> $b } @w ];
}

sub signal {
    my ($self, $sig) = @_;
    my $m = $self->master_pid or die "nginx is not running\n";
    kill $sig, $m or die "kill $sig $m: $!\n";
}

sub reload { $_[0]->signal('HUP') }

sub stop {
    my ($self, $sig) = @_;
    my $m = $self->master_pid;
    @RUNNING = grep { $_ != $self } @RUNNING;
    return 1 unless $m;
    kill($sig || 'QUIT', $m);
    my $gone = TrackerTest::wait_until(10, sub { !kill(0, $m) || _zombie($m) });
    if (!$gone) {
        kill 'KILL', $m;
        TrackerTest::wait_until(2, sub { !kill(0, $m) });
    }
    # Workers exit with the master; wait until no process maps the ring any more.
    TrackerTest::wait_until(5, sub { !@{ $self->_children_of($m) } });
    return $gone;
}

sub _zombie {
    my $pid = shift;
    my $stat = TrackerTest::read_file("/proc/$pid/stat");
    return !defined $stat || $stat =~ /^\d+ \(.*\) Z/;
}

sub _children_of {
    my ($self, $m) = @_;
    my @c;
    opendir my $d, '/proc' or return [];
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $stat = TrackerTest::read_file("/proc/$pid/stat");
        push @c, $pid if defined $stat && $stat =~ /^\d+ \(.*\) [^Z] (\d+)/ && $1 == $m;
    }
    return \@c;
}

sub error_log_text { TrackerTest::read_file($_[0]->error_log) // '' }

sub client { TrackerTest::Client->new($_[0]{port}, @_[1 .. $#_]) }

# One request on a fresh connection.
sub get {
    my ($self, $uri, %o) = @_;
    my $c = $self->client;
    my $r = $c->request($o{method} || 'GET', $uri, %o, close => 1);
    $c->close;
    return $r;
}

END {
    if ($$ == $TrackerTest::PARENT_PID) {
        $_->stop('TERM') for @RUNNING;
    }
}

1;
