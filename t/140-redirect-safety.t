# Redirect safety: more than 1,000 crafted click requests (CRLF and lone CR/LF, raw, encoded and
# double-encoded; //evil, \\evil, @evil, encoded schemes, ../ tricks, #, ?, &, 10 KB values,
# invalid UTF-8 and overlong encodings, NUL, homoglyphs, whitespace, and combinations), put into
# the dimensions (query arguments and a request header), the campaign id and the click id that a
# `response=redirect` location passes on, against campaigns whose landing URLs use {click_id},
# {campaign} and {dim.NAME} in the path, the query and the fragment, and a tracker_fallback_url.
#
# For every answer of the module:
#   - the status is 302, or 404 when there is nothing to redirect to;
#   - a 302 has exactly one Location, an absolute URL that a strict parser (our own, and URI)
#     reads with exactly the scheme, host and port of the campaign's landing URL, of its
#     fallback URL or of tracker_fallback_url, as the case implies; it is exactly the template
#     with each macro replaced by the percent-encoded value the module must have seen (RFC 3986
#     unreserved characters kept, everything else %XX), so values add no delimiter;
#   - the literal prefix of the template before its first macro is intact;
#   - no header name or value holds CR, LF, NUL or another control byte, and no header outside
#     the expected set appears (no Set-Cookie, no second Location);
#   - the event is stored once, with the campaign ("" and invalid_campaign for an invalid id),
#     the flags and the dimensions the request implies.
# The locations run with `tracker_invalid flag` and `tracker_limits query=64k`, so that every
# crafted value reaches the redirect builder instead of being refused with a 400.
# The same values on a pixel location always get 200 and the 43-byte GIF.
# Requests whose raw bytes nginx itself refuses (space, tab, CR, NUL, DEL in the request line)
# must get nginx's 400 and nothing else; a raw LF turns the request into HTTP/0.9 (no headers
# at all).
#
# Dot segments: a value that is exactly "." or ".." (or "%2e%2e", which decodes to it) would be
# a dot segment in a path position (https://shop.example.com:8443/p/{dim.pub}/... with pub=..
# giving /p/../..., which browsers resolve outside /p/); the module expands such a value to
# nothing in the path, and every Location must resolve inside its template's path prefix.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use IO::Socket::INET;
use URI;

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $SEED = $ENV{TRACKER_FUZZ_SEED} // 20261123;
my $RANDOM_CASES = $ENV{TRACKER_FUZZ_RANDOM} // 400;

# --- campaigns and the location fallback -------------------------------------------------------
my %CAMPAIGN = (
    'summer' => { status => 'active',
        landing_url => 'https://shop.example.com/summer?pub={dim.pub}&click={click_id}&c={campaign}&q={dim.q}&h={dim.h}' },
    'inpath' => { status => 'active',
        landing_url => 'https://shop.example.com:8443/p/{dim.pub}/{dim.q}/landing?h={dim.h}&k={click_id}' },
    'v6.host:1' => { status => 'active',
        landing_url => 'http://[2001:db8::1]:8080/v6/{campaign}/{dim.h}?k={click_id}#{dim.pub}' },
    'frag' => { status => 'active',
        landing_url => 'https://a.b.example.org/{click_id}/{dim.pub}#{dim.q}' },
    'paused-fb' => { status => 'paused', landing_url => 'https://shop.example.com/paused',
        fallback_url => 'https://paused-fb.example.com/fb/{dim.pub}?c={campaign}&k={click_id}' },
    'paused' => { status => 'paused', landing_url => 'https://shop.example.com/paused2' },
);
my $LOCATION_FALLBACK = 'https://fallback.example.net:9443/fb/{campaign}/{dim.pub}?c={click_id}&q={dim.q}';

write_campaigns([ map { { id => $_, %{ $CAMPAIGN{$_} } } } sort keys %CAMPAIGN ]);

my $ngx = TrackerTest::Nginx->new(workers => 1, log_level => 'warn', http => <<"HTTP");
    tracker_ring      \@RING\@ 32m;
    tracker_campaigns \@CAMPAIGNS\@ zone=campaigns:1m;
    server {
        listen \@LISTEN\@;
        large_client_header_buffers 4 256k;
        keepalive_requests 1000000;
        tracker_dimension t   \$arg_t;
        tracker_dimension pub \$arg_pub;
        tracker_dimension q   \$arg_q;
        tracker_dimension h   \$http_x_h;
        tracker_fallback_url "$LOCATION_FALLBACK";
        # The most permissive settings: every crafted value reaches the landing URL (the
        # default, tracker_invalid reject, answers 400 to many of them: t/180-limits.t).
        tracker_invalid flag;
        tracker_limits  query=64k;
        location = /c  { tracker click; }
        location = /c0 { tracker click; tracker_fallback_url off; }
        location = /r  { tracker postback response=redirect; }
        location = /i  { tracker impression; }
    }
HTTP
$ngx->start;

# --- what the module does to a value, in Perl ---------------------------------------------------

# core/src/input.rs percent_decode: %XX (either case) and '+' as space; bad escapes kept.
sub pdecode {
    my $s = shift;
    $s =~ s/\+|%([0-9A-Fa-f]{2})/defined $1 ? chr(hex $1) : ' '/ge;
    return $s;
}

# core/src/landing.rs percent_encode: unreserved kept, every other byte %XX uppercase.
sub pencode {
    my $s = shift;
    $s =~ s/([^A-Za-z0-9\-._~])/sprintf('%%%02X', ord $1)/ge;
    return $s;
}

# nginx's $arg_NAME: the raw text after NAME= in the first &-part starting with NAME=
# (case-insensitive). The arguments end at a raw '#'.
sub arg_value {
    my ($args, $name) = @_;
    for my $part (split /&/, $args, -1) {
        return substr($part, length($name) + 1)
            if length($part) > length($name) && lc(substr($part, 0, length($name) + 1)) eq lc("$name=");
    }
    return undef;
}

# Rust's String::from_utf8_lossy: each maximal invalid subpart becomes U+FFFD (WHATWG decoder).
sub lossy {
    my $b = shift;
    my ($out, $i, $n) = ('', 0, length $b);
    while ($i < $n) {
        my $c = ord substr($b, $i, 1);
        if ($c < 0x80) { $out .= chr $c; $i++; next }
        my ($need, $cp, $lo, $hi) = (0, 0, 0x80, 0xBF);
        if    ($c >= 0xC2 && $c <= 0xDF) { ($need, $cp) = (1, $c & 0x1F) }
        elsif ($c >= 0xE0 && $c <= 0xEF) { ($need, $cp) = (2, $c & 0x0F); $lo = 0xA0 if $c == 0xE0; $hi = 0x9F if $c == 0xED }
        elsif ($c >= 0xF0 && $c <= 0xF4) { ($need, $cp) = (3, $c & 0x07); $lo = 0x90 if $c == 0xF0; $hi = 0x8F if $c == 0xF4 }
        else { $out .= "\x{FFFD}"; $i++; next }
        my ($j, $ok) = ($i + 1, 1);
        for my $k (1 .. $need) {
            my ($l, $h) = $k == 1 ? ($lo, $hi) : (0x80, 0xBF);
            my $d = $j < $n ? ord substr($b, $j, 1) : -1;
            if ($d < $l || $d > $h) { $ok = 0; last }
            $cp = ($cp << 6) | ($d & 0x3F);
            $j++;
        }
        $out .= $ok ? chr $cp : "\x{FFFD}";
        $i = $j;
    }
    return $out;
}

sub valid_campaign_id { my $c = shift; return length($c) >= 1 && length($c) <= 64 && $c =~ /\A[A-Za-z0-9_.:-]+\z/ }

# WHATWG URL path normalization of dot segments ("." / ".." also as %2e in any case).
sub resolve_dots {
    my $path = shift;
    my @out;
    my @seg = split m{/}, $path, -1;
    shift @seg;    # the empty part before the leading '/'
    for my $i (0 .. $#seg) {
        my $s = lc $seg[$i];
        $s =~ s/%2e/./g;
        my $last = $i == $#seg;
        if ($s eq '..') { pop @out; push @out, '' if $last }
        elsif ($s eq '.') { push @out, '' if $last }
        else { push @out, $seg[$i] }
    }
    return '/' . join('/', @out);
}

# --- the crafted values ------------------------------------------------------------------------
# Text as it appears in the request: "as is" values go into the query string unchanged (they
# contain no byte that nginx refuses in a request line), and their raw bytes go fully
# percent-encoded as well, and into the X-H header when nginx accepts them there.
my @crafted = (
    '', 'plain', '%0d%0a', '%0D%0A', '%0d', '%0a', '%0D%0ASet-Cookie:%20evil=1',
    '%0d%0aLocation:%20https://evil.example', '%0aSet-Cookie:evil=1', '%0dSet-Cookie:evil=1',
    '%0d%0a%0d%0a<html>evil</html>', '%250d%250a', '%25250d%25250a', '%250D%250ASet-Cookie:%2520x=1',
    '%%0d0a', '%0%0d', '%E5%98%8A%E5%98%8DSet-Cookie:x=1',
    '//evil.example', '///evil.example', '////evil.example/x', '\\\\evil.example', '/\\evil', '\\/evil.example',
    '/%5cevil', '%5c%5cevil.example', '%2f%2fevil.example', '%2F%2Fevil.example%2F', '%252f%252fevil.example',
    '@evil.example', 'user:pass@evil.example', 'shop.example.com@evil.example', ':@evil.example:80',
    'https:evil', 'https:/evil', 'https://evil.example/', 'HTTPS://EVIL.EXAMPLE', 'http:\\\\evil.example',
    'javascript:alert(1)', 'JaVaScRiPt:alert(document.cookie)', 'java%0dscript:alert(1)',
    'java%09script:alert(1)', '%6a%61%76%61%73%63%72%69%70%74:alert(1)', 'javascript%3Aalert(1)',
    'data:text/html;base64,PHNjcmlwdD4=', 'vbscript:msgbox', 'https%3A%2F%2Fevil.example', 'https%253A%252F%252Fevil.example',
    '..', '.', '...', '%2e%2e', '%2E%2E', '%2e', '.%2e', '%2e.', '../../admin', '..%2f..%2f', '..%2F..%2Fadmin',
    '..%252f..%252f', '..\\..\\', '..%5c..%5c', '%c0%ae%c0%ae%c0%af', '....//....//', '/..;/admin',
    '%23frag', 'a%23b', '?x=1', '%3Fx%3D1', '?cid=evil', '%26cid%3Devil', 'x=y', '=', ';', '%3B',
    '%ff%fe', '%FF', '%c0%af', '%c0%80', '%e0%80%af', '%ed%a0%80', '%f4%90%80%80', '%f8%88%80%80%80', "\xff\xfe",
    "\xc0\xaf", "\xed\xa0\x80", '%00', 'a%00b', '%00%0d%0a', '%00//evil.example', '%u000d%u000a', '\\u000d\\u000a',
    "\xef\xbc\x8f\xef\xbc\x8fevil.example", '%EF%BC%8F%EF%BC%8Fevil.example', "\xef\xbd\x85\xef\xbd\x96\xef\xbd\x89\xef\xbd\x8c",
    "\xe2\x81\x84evil", "\xe2\x88\x95evil", '%E2%80%AE', "\xd0\xb5vil.example", '%E2%80%A8', '%C2%85', "\xe3\x80\x82evil",
    "sh\xd0\xbep.example.com", "\xe2\x80\x8b", '%EF%BB%BF',
    '%20', '+', 'a+b%20c', '%09', '%0b%0c', '%20%09%0d%0a', '%7f', '%1b[31m', '%08',
    '{click_id}', '%7Bcampaign%7D', '{dim.pub}', '{', '}', '%7B%7D',
    '%', '%%', '%4', '%zz', '%%41', '100%', '%%%', '%2',
    '"><script>alert(1)</script>', "'", '%22%27', '<>', '|', '^', '`', '[::1]', '[', ']',
    '%0d%0aLocation:%20//evil.example%0d%0a%0d%0a', '//evil.example%0d%0aSet-Cookie:%20a=b',
    '..%2f..%2f%0d%0a//evil.example@evil.example%23x?y', '%2e%2e%2f%0aLocation:javascript:alert(1)',
    "\\\\evil.example%00\xff%0d%0a", 'https:%2f%2fevil.example%23@shop.example.com',
    'A' x 10000, '%0d%0a' x 2000, '%ff' x 3400, "\xe2\x82\xac" x 3400, ('%2e%2e%2f' x 1200) . 'evil', 'x' x 1023 . "\xe2\x82\xac",
    'x' x 64, 'x' x 65, 'a..b', '.:.', '_', '-', 'SUMMER', 'summer%00', 'summer%0d%0a', 'summe%72', 'inpath%2F..',
);

# Bytes that nginx refuses raw in a request line (400), or that change how it reads it.
my @raw_line = (
    "a b", "a\tb", "a\rb", "a\x00b", "a\x7fb", "a\x01b", "a\x1b[0m", "\r\nSet-Cookie: evil=1", "a\x0bb", "a\x0cb",
    "%0d%0a\r\nLocation: https://evil.example", "x\r\n\r\nHTTP/1.1 200 OK",
);
# ... and a raw LF, which ends the request line: an HTTP/0.9 request, answered without headers.
my @raw_lf = ("a\nSet-Cookie: evil=1", "\nLocation: //evil.example");

# A header value nginx takes as it is: no CR, LF, NUL, no space or tab at either end.
sub header_ok { my $v = shift; return length($v) && length($v) < 20000 && $v !~ /[\r\n\0]/ && $v !~ /^[ \t]|[ \t]\z/ }

# --- the cases ---------------------------------------------------------------------------------
# A case: location, and the raw query text of cid, pub, q, click_id, and the X-H header.
my @cases;
my @cids = ('summer', 'inpath', 'v6.host:1', 'frag', 'paused-fb', 'paused', 'nope', '', 'v6.host%3A1', 'bad/id');
my @locs = ('/c', '/c0', '/r');
my $k = 0;
for my $v (@crafted) {
    my $enc = pencode($v);
    for my $form (['as-is', $v], ['encoded', $enc]) {
        my ($fname, $text) = @$form;
        for my $field (qw(pub q cid click_id)) {
            $k++;
            my %c = (name => "$field $fname", loc => $field eq 'click_id' ? '/r' : $locs[$k % 3],
                     cid => $cids[$k % @cids], pub => 'p' . ($k % 7), q => 'q' . $k);
            $c{$field} = $text;
            $c{click_id} = 'ck' . $k if $field ne 'click_id' && $c{loc} eq '/r';
            push @cases, \%c;
        }
    }
    # Every value also in a path segment: {dim.pub} in the paths of inpath, paused-fb's
    # fallback and the location fallback; {dim.q} in inpath's; {dim.h} in v6.host:1's.
    for my $cid ('inpath', 'paused-fb', 'nope') {
        $k++;
        push @cases, { name => "pub in path ($cid)", loc => $locs[$k % 2], cid => $cid, pub => $v, q => 'q' . $k };
    }
    $k++;
    push @cases, { name => 'q in path', loc => $locs[$k % 3], cid => 'inpath', pub => 'p', q => $enc, click_id => 'ck' . $k };
    if (header_ok($v)) {
        for my $cid ($cids[$k % @cids], 'v6.host:1') {
            $k++;
            push @cases, { name => 'header', loc => $locs[$k % 3], cid => $cid, pub => 'hp', q => 'hq', h => $v };
        }
    }
}
my $systematic = @cases;

# A seeded random mix: several crafted values at once, in every field.
srand($SEED);
my @pool = (@crafted, map { pencode($_) } @crafted);
my $pick = sub { $pool[int rand @pool] };
for my $i (1 .. $RANDOM_CASES) {
    my %c = (name => 'random', loc => $locs[int rand @locs]);
    for my $f (qw(pub q click_id)) {
        $c{$f} = rand() < 0.8 ? $pick->() : undef;
        # combinations: two values glued together, or a value repeated
        $c{$f} .= $pick->() if defined $c{$f} && rand() < 0.3;
    }
    $c{cid} = rand() < 0.5 ? $cids[int rand @cids] : $pick->();
    my $h = $pick->() . (rand() < 0.3 ? $pick->() : '');
    $c{h} = $h if rand() < 0.5 && header_ok($h);
    push @cases, \%c;
}

# --- requests ----------------------------------------------------------------------------------
my $client = $ngx->client(timeout => 10);
my $tag = 0;
my (@failures, %count, @dot_escapes, %expect_event);

sub fail_case {
    my ($case, $why, $res) = @_;
    push @failures, sprintf("%s [%s %s]: %s%s", $case->{name}, $case->{loc}, substr($case->{uri} // '', 0, 200), $why,
                            $res ? "\n      " . substr($res->{raw_headers} // '', 0, 600) =~ s/\r\n/\n      /gr : '');
}

sub build_uri {
    my ($loc, $c, $t) = @_;
    my @q = ("t=$t");
    for my $f (qw(cid pub q click_id)) {
        push @q, "$f=$c->{$f}" if defined $c->{$f};
    }
    return "$loc?" . join('&', @q);
}

# Header lines of a raw header block: (status line, [[name, value], ...]) or an error string.
sub header_lines {
    my $raw = shift;
    return (undef, undef, 'no header end') unless $raw =~ /\r\n\r\n\z/;
    my $block = substr($raw, 0, -4);
    my ($status, @lines) = split /\r\n/, $block, -1;
    my @h;
    for my $l (@lines) {
        return (undef, undef, "control byte in header line " . pencode($l)) if $l =~ /[\x00-\x08\x0a-\x1f\x7f]/;
        my ($n, $v) = $l =~ /\A([!#\$%&'*+.^_`|~0-9A-Za-z-]+): ?(.*)\z/s
            or return (undef, undef, "malformed header line " . pencode($l));
        push @h, [$n, $v];
    }
    return ($status, \@h, undef);
}

my %ALLOWED = map { lc($_) => 1 } qw(Server Date Content-Type Content-Length Connection Keep-Alive
                                      Cache-Control Pragma Expires Location);

# Which template a request must be redirected with, or undef for 404.
sub target_of {
    my ($loc, $cid_ok, $cid) = @_;
    if ($cid_ok && $CAMPAIGN{$cid}) {
        my $c = $CAMPAIGN{$cid};
        return ($c->{landing_url}, 'landing') if $c->{status} eq 'active';
        return ($c->{fallback_url}, 'campaign fallback') if $c->{fallback_url};
    }
    return $loc eq '/c0' ? (undef, '404') : ($LOCATION_FALLBACK, 'location fallback');
}

sub check_redirect {
    my ($case, $res, $t) = @_;
    my $uri = $case->{uri};
    my ($path, $args) = $uri =~ /\A([^?]*)\?([^#]*)/;
    my %raw = map { $_ => arg_value($args, $_) } qw(cid pub q click_id);
    my %val;
    my $truncated = 0;
    for my $f (qw(pub q)) {
        $val{$f} = pdecode($raw{$f} // '');
        $truncated = 1, $val{$f} = substr($val{$f}, 0, 1024) if length $val{$f} > 1024;
    }
    my $h = $case->{h} // '';
    $val{h} = pdecode($h);
    $truncated = 1, $val{h} = substr($val{h}, 0, 1024) if length $val{h} > 1024;
    my $cid = pdecode($raw{cid} // '');
    $truncated = 1, $cid = substr($cid, 0, 1024) if length $cid > 1024;
    my $cid_ok = valid_campaign_id($cid);
    my $campaign = $cid_ok ? $cid : '';
    my $is_click = $path ne '/r';
    my $click = '';
    if (!$is_click) {
        $click = pdecode($raw{click_id} // '');
        $truncated = 1, $click = substr($click, 0, 128) if length $click > 128;
    }
    my ($template, $why) = target_of($path, $cid_ok, $cid);
    my @flags;
    if (!$cid_ok) { push @flags, 'invalid_campaign' }
    elsif (!$CAMPAIGN{$cid}) { push @flags, 'unknown_campaign' }
    elsif ($CAMPAIGN{$cid}{status} ne 'active') { push @flags, 'inactive_campaign' }
    push @flags, 'truncated' if $truncated;

    my ($status_line, $hdrs, $err) = header_lines($res->{raw_headers});
    return fail_case($case, $err, $res) if $err;
    my %seen;
    for my $hv (@$hdrs) {
        my $n = lc $hv->[0];
        $seen{$n}++;
        return fail_case($case, "unexpected header $hv->[0]", $res) unless $ALLOWED{$n};
    }
    my @twice = grep { $seen{$_} > 1 } keys %seen;
    return fail_case($case, "header(s) more than once: @twice", $res) if @twice;
    my $want_status = defined $template ? 302 : 404;
    return fail_case($case, "status $res->{status}, want $want_status ($why)", $res) if $res->{status} != $want_status;
    $count{"$why $want_status"}++;
    $expect_event{$t} = { type => $is_click ? 'click' : 'postback', campaign => $campaign, status => $want_status,
                          flags => [ sort @flags ], dims => { %val, t => $t }, click => $is_click ? undef : $click };
    if ($want_status == 404) {
        return fail_case($case, 'a 404 with a Location', $res) if $seen{location};
        return 1;
    }
    my ($loc) = map { $_->[1] } grep { lc $_->[0] eq 'location' } @$hdrs;
    return fail_case($case, 'no Location', $res) unless defined $loc;

    # The exact URL: the template with each macro replaced by the encoded value.
    # In the path (before any "?" or "#" of the template), a value of only dots expands to
    # nothing: it would otherwise be a dot segment.
    my $re = '';
    my $rest = $template;
    my $in_path = 1;
    my $enc = sub { my $v = shift; return ($in_path && $v =~ /\A\.+\z/) ? '' : pencode($v) };
    while ($rest =~ /\A(.*?)\{(click_id|campaign|dim\.(\w+))\}(.*)\z/s) {
        my ($lit, $m, $dim) = ($1, $2, $3);
        $rest = $4;
        $in_path = 0 if $lit =~ /[?#]/;
        $re .= quotemeta($lit);
        if ($m eq 'click_id') { $re .= $is_click ? '(?<click>[0-9a-f]{32})' : quotemeta($enc->($click)) }
        elsif ($m eq 'campaign') { $re .= quotemeta($enc->($campaign)) }
        else { $re .= quotemeta($enc->($val{$dim} // '')) }
    }
    $re .= quotemeta($rest);
    return fail_case($case, "Location is not the expanded $why template $template:\n      $loc", $res)
        unless $loc =~ /\A$re\z/;
    $expect_event{$t}{click_from_location} = $+{click};

    # Independent strict checks of the URL.
    return fail_case($case, "Location has characters outside RFC 3986: $loc", $res)
        unless $loc =~ m{\A[A-Za-z0-9\-._~%!\$&'()*+,;=:@/?#\[\]]+\z} && $loc !~ /%(?![0-9A-F]{2})/;
    my ($t_scheme, $t_auth) = $template =~ m{\A(https?)://([^/?#]+)} or die "bad template $template";
    my ($scheme, $auth, $after) = $loc =~ m{\A([a-z]+)://([^/?#]*)(.*)\z}s
        or return fail_case($case, "Location is not an absolute URL: $loc", $res);
    return fail_case($case, "scheme/authority $scheme://$auth, want $t_scheme://$t_auth", $res)
        if $scheme ne $t_scheme || $auth ne $t_auth;
    my $u = URI->new($loc);
    my $tu = URI->new($template =~ s/\{[^}]*\}//gr);
    return fail_case($case, sprintf('URI reads %s://%s:%s, want %s://%s:%s', $u->scheme, $u->host, $u->port,
                                    $tu->scheme, $tu->host, $tu->port), $res)
        if !$u->can('host') || $u->scheme ne $tu->scheme || $u->host ne $tu->host || $u->port != $tu->port;
    my ($prefix) = $template =~ /\A([^{]*)/;
    return fail_case($case, "prefix $prefix lost", $res) unless index($loc, $prefix) == 0;
    for my $d ('/', '?', '#', '@', ':', '&', '=', '\\') {
        my $want = () = ($template =~ s/\{[^}]*\}//gr) =~ /\Q$d\E/g;
        my $got = () = $loc =~ /\Q$d\E/g;
        return fail_case($case, "'$d' appears $got times, the template has $want", $res) if $got != $want;
    }
    # The path after dot segments are resolved (what a browser requests) keeps the prefix's
    # path (dot segments resolved as a browser does).
    my ($ppath) = $prefix =~ m{\Ahttps?://[^/?#]*(/[^?#]*)?};
    if (defined $ppath && length $ppath > 1) {
        my ($lpath) = $after =~ m{\A([^?#]*)};
        my $resolved = resolve_dots($lpath);
        push @dot_escapes, "GET $uri -> Location: $loc (resolves to $resolved)" if index($resolved, $ppath) != 0;
    }
    return 1;
}

sub check_gif {
    my ($case, $res, $t) = @_;
    my ($status_line, $hdrs, $err) = header_lines($res->{raw_headers});
    return fail_case($case, $err, $res) if $err;
    my %seen;
    $seen{ lc $_->[0] }++ for @$hdrs;
    my @bad = grep { !$ALLOWED{$_} || $_ eq 'location' || $seen{$_} > 1 } keys %seen;
    return fail_case($case, "unexpected headers: @bad", $res) if @bad;
    return fail_case($case, "pixel answered $res->{status}", $res) if $res->{status} != 200;
    return fail_case($case, 'pixel body is not the 43-byte GIF', $res) if $res->{body} ne gif_bytes();
    return fail_case($case, 'pixel Content-Type ' . ($res->{headers}{'content-type'} // '-'), $res)
        if ($res->{headers}{'content-type'} // '') ne 'image/gif';
    $count{'gif 200'}++;
    $expect_event{$t} = { type => 'impression', status => 200 };
    return 1;
}

my ($clicks, $gifs) = (0, 0);
for my $case (@cases) {
    my $t = ++$tag;
    $case->{uri} = build_uri($case->{loc}, $case, $t);
    my %hdr = defined $case->{h} ? (headers => { 'X-H' => $case->{h} }) : ();
    my $res = eval { $client->get($case->{uri}, %hdr) };
    if (!$res) { fail_case($case, "no answer: $@"); $client->close; next }
    $clicks++;
    check_redirect($case, $res, $t);
    # The same values on the pixel (one in three, and every header case).
    next unless $t % 3 == 0 || defined $case->{h};
    my $gt = ++$tag;
    my $gcase = { %$case, name => "$case->{name} (pixel)", loc => '/i' };
    $gcase->{uri} = build_uri('/i', $gcase, $gt);
    my $g = eval { $client->get($gcase->{uri}, %hdr) };
    if (!$g) { fail_case($gcase, "no answer: $@"); $client->close; next }
    $gifs++;
    check_gif($gcase, $g, $gt);
}

# Raw bytes nginx refuses in the request line: its own 400 (the module is not reached), or for
# a raw LF an HTTP/0.9 answer: no status line, no header at all.
sub raw_request {
    my $bytes = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ngx->port, Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    print {$s} $bytes;
    my ($out, $buf) = ('');
    my $rin = '';
    vec($rin, fileno($s), 1) = 1;
    while (select(my $r = $rin, undef, undef, 5)) {
        last unless sysread($s, $buf, 65536);
        $out .= $buf;
    }
    close $s;
    return $out;
}
my $raw_cases = 0;
for my $v (@raw_line, @raw_lf) {
    for my $field (qw(pub cid click_id)) {
        for my $loc ('/c', '/r', '/i') {
            my $t = ++$tag;
            my $uri = "$loc?t=$t&" . ($field eq 'cid' ? "pub=x&cid=$v" : "cid=summer&$field=$v");
            my $case = { name => "raw $field", loc => $loc, uri => $uri };
            my $out = raw_request("GET $uri HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            $raw_cases++;
            # The request line ends at the first LF (a CR before it is dropped): HTTP/0.9 when
            # what comes before holds no byte nginx refuses.
            my ($line_end) = $v =~ /\A([^\n]*)\n/;
            $line_end =~ s/\r\z// if defined $line_end;
            my $lf = defined $line_end && $line_end !~ /[\r\0\x7f\x01-\x08\x0b-\x1f ]/;
            if ($out =~ /\AHTTP\/1\.1 400 Bad Request\r\n/) {
                my $hdr = substr($out, 0, index($out, "\r\n\r\n") + 4);
                my (undef, $h, $err) = header_lines($hdr);
                fail_case($case, $err) if $err;
                fail_case($case, 'a 400 with a Location or a cookie: ' . pencode($hdr)) if $hdr =~ /^(Location|Set-Cookie):/mi;
                $count{'raw 400 from nginx'}++;
            } elsif ($lf && $out !~ /\AHTTP\//) {
                # HTTP/0.9: the module answered, nginx sent no headers: nothing to inject into.
                fail_case($case, 'HTTP/0.9 answer carries header text: ' . pencode($out)) if $out =~ /Set-Cookie|Location|evil/i;
                $count{'raw LF: HTTP/0.9, no headers'}++;
                $expect_event{$t} = { type => $loc eq '/i' ? 'impression' : $loc eq '/c' ? 'click' : 'postback', loose => 1 };
            } else {
                fail_case($case, 'unexpected answer to raw bytes: ' . pencode(substr($out, 0, 300)));
            }
        }
    }
}

$ngx->stop;

# --- the summary -------------------------------------------------------------------------------
my $redirect_cases = $clicks;
diag sprintf("redirect cases: %d click requests (%d systematic, %d seeded random, seed %s), %d pixel requests, %d raw-byte requests",
             $clicks, $systematic, $clicks - $systematic, $SEED, $gifs, $raw_cases);
diag "  $_: $count{$_}" for sort keys %count;
cmp_ok($redirect_cases, '>=', 1000, "at least 1,000 crafted click requests ($redirect_cases)");
is(scalar @failures, 0, "every answer is a safe 302 or 404 with the expected Location and headers ($clicks clicks, $gifs pixels, $raw_cases raw)")
    or diag join("\n", "first failures:", @failures[0 .. ($#failures < 19 ? $#failures : 19)]);
ok($count{'landing 302'} && $count{'location fallback 302'} && $count{'campaign fallback 302'} && $count{'404 404'},
   'landing, campaign fallback, location fallback and 404 all exercised');
is($count{'gif 200'}, $gifs, "every pixel request got the 43-byte GIF ($gifs)");

is(scalar @dot_escapes, 0, 'no Location resolves (dot segments) outside the path prefix of its template')
    or diag join("\n", scalar(@dot_escapes) . ' such redirects, e.g.:', @dot_escapes[0 .. ($#dot_escapes < 4 ? $#dot_escapes : 4)]);

# --- the events: one per request the module answered, with what the request implies ------------
my $events = drain();
my (%by_tag, @ev_fail);
push @{ $by_tag{ dim($_, 't') // '' } }, $_ for @$events;
for my $t (sort { $a <=> $b } keys %expect_event) {
    my $want = $expect_event{$t};
    my $evs = $by_tag{$t} || [];
    if (@$evs != 1) { push @ev_fail, "t=$t: " . scalar(@$evs) . " events"; next }
    my $e = $evs->[0];
    push @ev_fail, "t=$t: type $e->{type}, want $want->{type}" if $e->{type} ne $want->{type};
    next if $want->{loose} || $want->{type} eq 'impression';
    push @ev_fail, "t=$t: status $e->{status}, want $want->{status}" if $e->{status} != $want->{status};
    push @ev_fail, "t=$t: campaign '" . pencode($e->{campaign}) . "', want '" . pencode($want->{campaign}) . "'"
        if $e->{campaign} ne $want->{campaign};
    my $got_flags = join ',', @{ flags_of($e) };
    my $want_flags = join ',', @{ $want->{flags} };
    push @ev_fail, "t=$t: flags [$got_flags], want [$want_flags]" if $got_flags ne $want_flags;
    for my $d (qw(pub q h)) {
        my $w = lossy($want->{dims}{$d});
        my $g = dim($e, $d) // '';
        push @ev_fail, "t=$t: dim $d '" . pencode(substr($g, 0, 80)) . "' want '" . pencode(substr($w, 0, 80)) . "'"
            if $g ne $w;
    }
    if ($want->{type} eq 'click') {
        push @ev_fail, "t=$t: click_id is not the event id" if ($e->{click_id} // '') ne $e->{id};
        push @ev_fail, "t=$t: the Location's click id is not the event id"
            if defined $want->{click_from_location} && $want->{click_from_location} ne $e->{id};
    } else {
        my $w = lossy($want->{click});
        push @ev_fail, "t=$t: click_id differs" if ($e->{click_id} // '') ne $w;
    }
}
my @extra = grep { !exists $expect_event{$_} } keys %by_tag;
is(scalar @ev_fail, 0, 'one event per answered request (' . scalar(keys %expect_event) . ') with the campaign, flags, dimensions and click id it implies')
    or diag join("\n", @ev_fail[0 .. ($#ev_fail < 19 ? $#ev_fail : 19)]);
is(scalar @extra, 0, 'no event without a request the module answered') or diag "extra tags: @extra[0 .. ($#extra < 9 ? $#extra : 9)]";
ok(!grep({ $_->{campaign} ne '' && !valid_campaign_id($_->{campaign}) } @$events), 'no stored campaign id outside [A-Za-z0-9_.:-]{1,64}');

my $h = ring_header();
is($h->{dropped_full_total} + $h->{dropped_too_large_total}, 0, 'nothing dropped from the ring');
my $log = $ngx->error_log_text;
unlike($log, qr/\[(alert|crit|emerg)\]|exited on signal/, 'no alert, crit, emerg or crashed worker in the error log');

done_testing();
