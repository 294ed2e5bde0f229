# The campaign admin API (tracker_admin), with an nginx of our own (master + 2 workers,
# 127.0.0.1 only):
# - access: tracker_admin_token (inherited from the server level) wants "Authorization: Bearer",
#   401 with WWW-Authenticate otherwise; "tracker_admin_token off" falls back to loopback only,
#   checked on the connection's address (made non-loopback here with the realip module: 403);
# - every method and status: GET list (paged) and one, PUT 201/200, DELETE 204/404, POST bulk,
#   400 on bad bodies naming the field (and nothing changes), 404, 405 with Allow, 413, 415,
#   bodies in memory, in nginx's temporary file and chunked;
# - a change is visible at once on both workers through a click location, and a deleted
#   campaign's click is flagged unknown_campaign in the ring;
# - persistence: the campaigns file and its journal hold every change (t/200-admin-journal.t
#   tests the journal itself), a HUP reload and a restart keep it; a failed journal write
#   answers 500 (the zone has the change) and is logged at [error];
# - bulk POST of 1000 campaigns, then paging through all of them; a full zone (64k) answers
#   507 to a bulk of 5000 and nothing changes;
# - the test clock (tracker_admin test_clock): PUT/GET _clock; 404 without test_clock.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::More;
use JSON::PP ();
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use POSIX ();

my $WORK = $ENV{TEST_NGINX_WORKDIR};
my $CAMPAIGNS = $ENV{TEST_NGINX_CAMPAIGNS};
my $TOKEN = 'k3y-0123456789-abcdef';
my $JSON = JSON::PP->new->canonical->utf8;

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/summer?k={click_id}' },
    { id => 'old', status => 'ended', landing_url => 'https://shop.example.com/old' },
]);

my $ngx = TrackerTest::Nginx->new(workers => 2, log_level => 'info', http => <<"HTTP");
    tracker_ring      \@RING\@ 4m;
    tracker_campaigns \@CAMPAIGNS\@ zone=campaigns:4m;
    client_max_body_size 100m;
    log_format w '\$pid \$status \$arg_t';
    server {
        listen \@LISTEN\@ reuseport;
        access_log \@WORK\@/access.log w;
        keepalive_requests 100000;
        tracker_dimension t \$arg_t;
        tracker_admin_token $TOKEN;

        location /tracker/campaigns { tracker_admin test_clock; tracker_admin_token off; }
        location /tok/campaigns     { tracker_admin; }
        location /noclock/campaigns { tracker_admin; tracker_admin_token off; }
        location /infile/campaigns  { tracker_admin; tracker_admin_token off; client_body_in_file_only clean; }
        location /small/campaigns   { tracker_admin; tracker_admin_token off; client_max_body_size 1k; }
        location /proxied/campaigns {
            tracker_admin;
            tracker_admin_token off;
            set_real_ip_from 127.0.0.1;
            real_ip_header   X-Real-IP;
        }
        location = /c { tracker click; }
    }
HTTP
$ngx->start;
my @workers = @{ $ngx->worker_pids };
is(scalar @workers, 2, 'two workers');

# --- helpers -------------------------------------------------------------------------------
# api(METHOD, PATH, BODY, HEADERS...): BODY a string or a reference (sent as JSON); the answer
# with {json} decoded when it is JSON.
sub api {
    my ($method, $path, $body, %h) = @_;
    my %o = (method => $method, headers => { 'Content-Type' => 'application/json', %h });
    delete $o{headers}{'Content-Type'} if exists $h{'Content-Type'} && !defined $h{'Content-Type'};
    $o{body} = ref $body ? $JSON->encode($body) : $body if defined $body;
    my $r = $ngx->get($path, %o);
    if (length $r->{body} && ($r->{headers}{'content-type'} // '') eq 'application/json') {
        $r->{json} = eval { $JSON->decode($r->{body}) };
        $r->{json} = { _not_json => $r->{body} } unless $r->{json};
    }
    return $r;
}

sub err_of { my $r = shift; return ref $r->{json} eq 'HASH' ? ($r->{json}{error} // '') : '' }

# Every campaign (id => object without counters), through the API's paging.
sub all_campaigns {
    my ($base, $limit) = @_;
    $base ||= '/tracker/campaigns';
    my (%all, $pages, $count);
    my $cursor;
    my $dups = 0;
    while (1) {
        my $q = "$base?limit=" . ($limit || 1000) . (defined $cursor ? "&cursor=$cursor" : '');
        my $r = api('GET', $q);
        die "GET $q: $r->{status} $r->{body}" unless $r->{status} == 200;
        $pages++;
        $count = $r->{json}{count};
        for my $c (@{ $r->{json}{campaigns} }) {
            my %c = %$c;
            delete $c{counters};
            $dups++ if exists $all{ $c{id} };
            $all{ $c{id} } = \%c;
        }
        $cursor = $r->{json}{next};
        last unless defined $cursor;
        die "too many pages" if $pages > 10000;
    }
    return { campaigns => \%all, pages => $pages, count => $count, dups => $dups };
}

# The campaigns file with its journal applied (what a restart loads), as id => object.
sub file_campaigns { return durable_campaigns($_[0] || $CAMPAIGNS) }

sub click {
    my ($cid, $tag) = @_;
    return $ngx->get("/c?cid=$cid&t=$tag");
}

my %camp_x = (status => 'active', landing_url => 'https://x.example.com/landing?k={click_id}');

# --- access --------------------------------------------------------------------------------
{
    my $r = api('GET', '/tok/campaigns');
    is($r->{status}, 401, 'token: no Authorization header: 401');
    like($r->{headers}{'www-authenticate'} // '', qr/^Bearer\b/, 'with WWW-Authenticate: Bearer');
    like(err_of($r), qr/Authorization: Bearer/, 'and a JSON error saying what is needed');
    is($r->{headers}{'cache-control'}, 'no-store', 'Cache-Control: no-store');

    $r = api('GET', '/tok/campaigns', undef, Authorization => "Bearer ${TOKEN}x");
    is($r->{status}, 401, 'token: a wrong token (one more byte): 401');
    like($r->{headers}{'www-authenticate'} // '', qr/error="invalid_token"/, 'invalid_token');
    $r = api('GET', '/tok/campaigns', undef, Authorization => 'Bearer ' . ('k' x length $TOKEN));
    is($r->{status}, 401, 'token: a wrong token of the right length: 401');
    $r = api('GET', '/tok/campaigns', undef, Authorization => "Basic $TOKEN");
    is($r->{status}, 401, 'token: another scheme: 401');
    $r = api('GET', '/tok/campaigns', undef, Authorization => "Bearer $TOKEN");
    is($r->{status}, 200, 'token: the right token: 200');
    is($r->{json}{count}, 2, 'the list of the two campaigns of the file');
    $r = api('GET', '/tok/campaigns/summer', undef, Authorization => "bearer  $TOKEN");
    is($r->{status}, 200, 'token: the scheme is case-insensitive');
    $r = api('PUT', '/tok/campaigns/tok-made', { %camp_x }, Authorization => "Bearer nope-$TOKEN");
    is($r->{status}, 401, 'token: a PUT with a wrong token is refused');
    is(api('GET', '/tracker/campaigns/tok-made')->{status}, 404, 'and changed nothing');

    $r = api('GET', '/tracker/campaigns');
    is($r->{status}, 200, 'tracker_admin_token off: a loopback client is answered without a token');
    $r = api('GET', '/proxied/campaigns', undef, 'X-Real-IP' => '203.0.113.7');
    is($r->{status}, 403, 'without a token, a client that is not on loopback gets 403');
    like(err_of($r), qr/loopback/, 'saying why');
    $r = api('PUT', '/proxied/campaigns/from-far', { %camp_x }, 'X-Real-IP' => '198.51.100.1');
    is($r->{status}, 403, 'a PUT from afar: 403');
    is(api('GET', '/tracker/campaigns/from-far')->{status}, 404, 'and changed nothing');
    for my $ip ('127.0.0.9', '::1', '::ffff:127.0.0.1') {
        is(api('GET', '/proxied/campaigns', undef, 'X-Real-IP' => $ip)->{status}, 200, "$ip is loopback");
    }
    is(api('GET', '/proxied/campaigns', undef, 'X-Real-IP' => '::2')->{status}, 403, '::2 is not');
}

# --- GET -----------------------------------------------------------------------------------
{
    my $r = api('GET', '/tracker/campaigns/summer');
    is($r->{status}, 200, 'GET one: 200');
    is($r->{headers}{'content-type'}, 'application/json', 'Content-Type: application/json');
    is($r->{json}{id}, 'summer', 'its id');
    is($r->{json}{landing_url}, 'https://shop.example.com/summer?k={click_id}', 'its landing URL');
    is(ref $r->{json}{counters}, 'HASH', 'and its counters');
    ok(exists $r->{json}{counters}{clicks} && exists $r->{json}{counters}{spend_micros}, 'clicks, spend_micros...');

    $r = api('GET', '/tracker/campaigns/nope');
    is($r->{status}, 404, 'GET an unknown campaign: 404');
    is(err_of($r), 'no campaign "nope"', 'with a JSON error');
    is(api('GET', '/tracker/campaigns/a%20b')->{status}, 404, 'GET an invalid id: 404');
    is(api('GET', '/tracker/campaigns/summer/x')->{status}, 404, 'GET a deeper path: 404');
    is(api('GET', '/tracker/campaignsX')->{status}, 404, 'GET a sibling path: 404');
    is(api('GET', '/tracker/campaigns/summer/')->{status}, 200, 'a trailing slash is fine');
    is(api('GET', '/tracker/campaigns/')->{json}{count}, 2, 'the list with a trailing slash');

    $r = api('HEAD', '/tracker/campaigns/summer');
    is($r->{status}, 200, 'HEAD one: 200');
    ok($r->{headers}{'content-length'} > 0, 'with the Content-Length of the GET');
    is($r->{body}, '', 'and no body');
}

# --- PUT: create, update, visible at once on both workers ----------------------------------
my $file_before = read_file($CAMPAIGNS);
{
    my $r = api('PUT', '/tracker/campaigns/x1', { %camp_x, daily_budget => 5 });
    is($r->{status}, 201, 'PUT a new campaign: 201') or diag $r->{body};
    is($r->{json}{id}, 'x1', 'answers the campaign, id from the URL');
    is($r->{json}{daily_budget}, 5, 'as stored');
    is(ref $r->{json}{counters}, 'HASH', 'with counters');

    my %pids;
    my $ok = 0;
    for my $i (1 .. 40) {
        my $c = click('x1', "put-$i");
        $ok++ if $c->{status} == 302 && ($c->{headers}{location} // '') =~ m{^https://x\.example\.com/landing\?k=[0-9a-f]{32}$};
    }
    is($ok, 40, 'at once, every click of the new campaign goes to its landing URL');

    $r = api('PUT', '/tracker/campaigns/x1', { id => 'x1', %camp_x, landing_url => 'https://x2.example.com/' });
    is($r->{status}, 200, 'PUT an existing campaign (id in the body too): 200');
    ok(!exists $r->{json}{daily_budget}, 'the object replaces the campaign (no daily_budget any more)');
    $ok = 0;
    for my $i (1 .. 40) {
        my $c = click('x1', "upd-$i");
        $ok++ if $c->{status} == 302 && ($c->{headers}{location} // '') eq 'https://x2.example.com/';
    }
    is($ok, 40, 'at once, every click goes to the new landing URL');
    my %by_pid;
    for my $l (@{ read_log("$WORK/access.log") }) {
        my ($pid, $st, $t) = split ' ', $l;
        $by_pid{$pid}++ if defined $t && $t =~ /^upd-/ && $st == 302;
    }
    is(scalar(keys %by_pid), 2, 'both workers served the updated campaign') or diag explain \%by_pid;

    my $f = file_campaigns();
    ok($f && $f->{x1}, 'durable: the campaigns file and its journal have x1');
    is($f && $f->{x1}{landing_url}, 'https://x2.example.com/', 'with its new landing URL');
    ok($f && $f->{summer} && $f->{old}, 'and still the campaigns of the file');
    is(read_file($CAMPAIGNS), $file_before, 'the campaigns file itself is not rewritten');
    cmp_ok(scalar @{ journal_records("$CAMPAIGNS.journal") }, '>=', 2, 'the journal has a record per PUT');

    $r = api('PUT', '/tracker/campaigns/x1/', { %camp_x });
    is($r->{status}, 200, 'PUT with a trailing slash');
    $r = api('PUT', '/tracker/campaigns/x-charset', { %camp_x }, 'Content-Type' => 'application/json; charset=utf-8');
    is($r->{status}, 201, 'Content-Type application/json with a charset is JSON');
    $r = api('PUT', '/tracker/campaigns/x-noct', $JSON->encode({ %camp_x }), 'Content-Type' => undef);
    is($r->{status}, 201, 'no Content-Type at all is fine');
}

# --- validation: 400 naming the field, nothing changes ------------------------------------
{
    my $snap = all_campaigns();
    my $file = read_file($CAMPAIGNS);
    my @bad = (
        [ 'a budget that is not a number', '/tracker/campaigns/x1', { %camp_x, daily_budget => 'five' },
          qr/^campaign "x1": daily_budget: must be a number$/ ],
        [ 'a misspelt field', '/tracker/campaigns/x1', { %camp_x, dayly_budget => 5 },
          qr/^campaign "x1": unknown field "dayly_budget"$/ ],
        [ 'a bad landing URL', '/tracker/campaigns/x1', { %camp_x, landing_url => 'ftp://x.example.com/' },
          qr/^campaign "x1": landing_url: .*scheme/ ],
        [ 'a bad status', '/tracker/campaigns/x1', { %camp_x, status => 'running' },
          qr/^campaign "x1": status: "running"/ ],
        [ 'a missing landing URL', '/tracker/campaigns/new-one', { status => 'active' },
          qr/^campaign "new-one": missing field "landing_url"$/ ],
        [ 'another id in the body', '/tracker/campaigns/x1', { %camp_x, id => 'x2' },
          qr/^campaign "x1": id: "x2" in the body is not the id of the URL/ ],
        [ 'an id that is not a string', '/tracker/campaigns/x1', { %camp_x, id => 7 },
          qr/^campaign "x1": id: 7 / ],
        [ 'invalid JSON', '/tracker/campaigns/x1', '{"status": "active",', qr/^invalid JSON: / ],
        [ 'an array for one campaign', '/tracker/campaigns/x1', [ { %camp_x } ], qr/must be a JSON object/ ],
        [ 'an empty body', '/tracker/campaigns/x1', '', qr/body is empty/ ],
        [ 'an invalid id in the URL', '/tracker/campaigns/a%20b', { %camp_x }, qr/^invalid id "a b"/ ],
        [ 'bulk: not an array', '/tracker/campaigns', { %camp_x, id => 'b1' }, qr/must be a JSON array/ ],
        [ 'bulk: an element that is not an object', '/tracker/campaigns', [ { %camp_x, id => 'b1' }, 3 ],
          qr/^object 2: not a JSON object$/ ],
        [ 'bulk: an element without id', '/tracker/campaigns', [ { %camp_x, id => 'b1' }, { %camp_x } ],
          qr/^object 2: missing field "id"$/ ],
        [ 'bulk: a bad field in the last element', '/tracker/campaigns',
          [ (map { { %camp_x, id => "b$_" } } 1 .. 50), { %camp_x, id => 'b51', total_clicks => -3 } ],
          qr/^campaign "b51": total_clicks: must be a whole number/ ],
        [ 'bulk: duplicate ids', '/tracker/campaigns', [ { %camp_x, id => 'b1' }, { %camp_x, id => 'b2' }, { %camp_x, id => 'b1' } ],
          qr/^campaign "b1": duplicate id \(objects 1 and 3\)$/ ],
        [ 'bulk: trailing garbage', '/tracker/campaigns', $JSON->encode([ { %camp_x, id => 'b1' } ]) . ' x',
          qr/^invalid JSON: trailing characters/ ],
    );
    for my $b (@bad) {
        my ($what, $path, $body, $re) = @$b;
        my $method = $path =~ m{/campaigns$} ? 'POST' : 'PUT';
        my $r = api($method, $path, $body);
        is($r->{status}, 400, "$what: 400");
        like(err_of($r), $re, "$what: the error names the field") or diag $r->{body};
    }
    my $after = all_campaigns();
    is_deeply($after->{campaigns}, $snap->{campaigns}, 'after the bad bodies, the campaigns are unchanged');
    is($after->{count}, $snap->{count}, 'and their count');
    is(read_file($CAMPAIGNS), $file, 'and the campaigns file');

    my $r = api('PUT', '/tracker/campaigns/x1', $JSON->encode({ %camp_x }), 'Content-Type' => 'text/plain');
    is($r->{status}, 415, 'a body that says it is text/plain: 415');
    like(err_of($r), qr/not JSON/, 'saying so');
    $r = api('POST', '/tracker/campaigns', 'id=1', 'Content-Type' => 'application/x-www-form-urlencoded');
    is($r->{status}, 415, 'a form body: 415');

    $r = api('PUT', '/tracker/campaigns/big', '{"status": "active", "landing_url": "https://big.example.com/", "x": "' . ('y' x (1536 * 1024)) . '"}');
    is($r->{status}, 413, 'PUT of a body over 1 MiB: 413');
    like(err_of($r), qr/larger/, 'with a JSON error');
    $r = api('PUT', '/small/campaigns/x1', { %camp_x, landing_url => 'https://x.example.com/' . ('p' x 2000) });
    is($r->{status}, 413, "nginx's client_max_body_size applies too");
    is(api('GET', '/tracker/campaigns/big')->{status}, 404, 'nothing was created');
}

# --- 405, DELETE ------------------------------------------------------------------------------
{
    my $r = api('PATCH', '/tracker/campaigns/x1', { %camp_x });
    is($r->{status}, 405, 'PATCH one: 405');
    is($r->{headers}{allow}, 'GET, HEAD, PUT, DELETE', 'Allow lists the methods of one campaign');
    $r = api('POST', '/tracker/campaigns/x1', { %camp_x });
    is($r->{status}, 405, 'POST one: 405');
    $r = api('DELETE', '/tracker/campaigns');
    is($r->{status}, 405, 'DELETE the list: 405');
    is($r->{headers}{allow}, 'GET, HEAD, POST', 'Allow lists the methods of the list');
    $r = api('PUT', '/tracker/campaigns', [ { %camp_x, id => 'b1' } ]);
    is($r->{status}, 405, 'PUT the list: 405');

    my $c = click('x1', 'before-delete');
    is($c->{status}, 302, 'x1 takes clicks');
    $r = api('DELETE', '/tracker/campaigns/x1');
    is($r->{status}, 204, 'DELETE: 204');
    is($r->{body}, '', 'no body');
    is(api('GET', '/tracker/campaigns/x1')->{status}, 404, 'then GET: 404');
    is(api('DELETE', '/tracker/campaigns/x1')->{status}, 404, 'DELETE again: 404');
    is(api('DELETE', '/tracker/campaigns/never')->{status}, 404, 'DELETE an unknown campaign: 404');
    my $f = file_campaigns();
    ok($f && !$f->{x1} && $f->{summer}, 'the file no longer has x1');
    my $miss = 0;
    for my $i (1 .. 20) { $miss++ if click('x1', "after-delete-$i")->{status} == 404 }
    is($miss, 20, 'at once, clicks of the deleted campaign get 404 (no fallback configured)');
}

# --- bodies: chunked, in nginx's temporary file ---------------------------------------------
{
    my $body = $JSON->encode({ %camp_x, landing_url => 'https://chunked.example.com/' });
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $ngx->port, Proto => 'tcp') or die $!;
    my ($a, $b) = (substr($body, 0, 10), substr($body, 10));
    print $s "PUT /tracker/campaigns/chunked HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        . sprintf("%x\r\n%s\r\n", length $a, $a) . sprintf("%x\r\n%s\r\n", length $b, $b) . "0\r\n\r\n";
    local $/;
    my $resp = <$s>;
    close $s;
    like($resp // '', qr{^HTTP/1\.1 201 }, 'a chunked body: 201');
    is(api('GET', '/tracker/campaigns/chunked')->{json}{landing_url}, 'https://chunked.example.com/', 'stored');

    my $r = api('PUT', '/infile/campaigns/infile', { %camp_x, landing_url => 'https://infile.example.com/' });
    is($r->{status}, 201, 'a body nginx keeps in a temporary file (client_body_in_file_only): 201');
    is(api('GET', '/tracker/campaigns/infile')->{json}{landing_url}, 'https://infile.example.com/', 'stored');
    $r = api('POST', '/infile/campaigns', [ map { { %camp_x, id => "infile-$_" } } 1 .. 3 ]);
    is_deeply($r->{json}, { created => 3, updated => 0 }, 'a bulk body from the temporary file');
    is(api('DELETE', "/tracker/campaigns/infile-$_")->{status}, 204, "cleanup infile-$_") for 1 .. 3;
}

# --- bulk: 1000 campaigns, paging ---------------------------------------------------------------
{
    my @bulk = map {
        { id => sprintf('bulk-%04d', $_), status => ($_ % 7 ? 'active' : 'paused'),
          landing_url => "https://bulk.example.com/$_?k={click_id}", price_per_click => 0.25,
          daily_clicks => $_ }
    } 1 .. 1000;
    my $before = api('GET', '/tracker/campaigns')->{json}{count};
    my $t0 = time;
    my $r = api('POST', '/tracker/campaigns', \@bulk);    # ~140 KB: nginx puts it in a temporary file
    is($r->{status}, 200, 'POST 1000 campaigns: 200') or diag $r->{body};
    is_deeply($r->{json}, { created => 1000, updated => 0 }, '1000 created');
    note sprintf('bulk POST of 1000 took %.3f s', time - $t0);

    my $all = all_campaigns('/tracker/campaigns', 100);
    is($all->{count}, $before + 1000, 'count');
    is(scalar(keys %{ $all->{campaigns} }), $before + 1000, 'paging by 100 returns every campaign');
    is($all->{dups}, 0, 'each once');
    cmp_ok($all->{pages}, '>=', 11, "in $all->{pages} pages");
    my $bad = 0;
    for my $c (@bulk) {
        my $got = $all->{campaigns}{ $c->{id} };
        $bad++ unless $got && $got->{landing_url} eq $c->{landing_url} && $got->{status} eq $c->{status}
            && $got->{daily_clicks} == $c->{daily_clicks} && $got->{price_per_click} == 0.25;
    }
    is($bad, 0, 'every bulk campaign as posted');
    my $big = all_campaigns('/tracker/campaigns', 5000);
    is(scalar(keys %{ $big->{campaigns} }), $before + 1000, 'limit above 1000 works (as 1000)');
    cmp_ok($big->{pages}, '>=', 2, 'and pages of at most 1000');
    my $p = api('GET', '/tracker/campaigns');
    is(scalar @{ $p->{json}{campaigns} }, 100, 'the default page is 100');
    ok(defined $p->{json}{next}, 'with a next cursor');
    is(api('GET', '/tracker/campaigns?limit=0')->{status}, 400, 'limit=0: 400');
    is(api('GET', '/tracker/campaigns?limit=x')->{status}, 400, 'limit=x: 400');
    is(api('GET', '/tracker/campaigns?cursor=abc')->{status}, 400, 'a bad cursor: 400');
    my $end = api('GET', '/tracker/campaigns?cursor=99999999');
    is_deeply([ $end->{status}, $end->{json}{campaigns}, $end->{json}{next} ], [ 200, [], undef ],
              'a cursor past the end: an empty last page');

    my $f = file_campaigns();
    is(scalar(grep { /^bulk-/ } keys %{ $f || {} }), 1000, 'the file has the 1000 campaigns');
    like(click('bulk-0001', 'bulk-click')->{headers}{location} // '', qr{^https://bulk\.example\.com/1\?k=}, 'a bulk campaign takes clicks');

    # Again, with 10 changes and 5 new ones.
    $_->{landing_url} =~ s/bulk\.example/bulk2.example/ for @bulk[0 .. 9];
    push @bulk, map { { id => "bulk-new-$_", status => 'active', landing_url => 'https://new.example.com/' } } 1 .. 5;
    $r = api('POST', '/tracker/campaigns', \@bulk);
    is_deeply($r->{json}, { created => 5, updated => 1000 }, 'a second bulk: 5 created, 1000 updated');
    is(api('GET', '/tracker/campaigns/bulk-0003')->{json}{landing_url}, 'https://bulk2.example.com/3?k={click_id}', 'changed');
    $r = api('POST', '/tracker/campaigns', []);
    is_deeply([ $r->{status}, $r->{json} ], [ 200, { created => 0, updated => 0 } ], 'an empty bulk: 200, nothing');
}

# --- concurrent changes on both workers: every one is in the zone and in the file -----------
{
    my @kids;
    for my $k (1 .. 4) {
        my $pid = fork();
        die "fork: $!" unless defined $pid;
        if ($pid == 0) {
            my $c = $ngx->client;
            my $ok = 0;
            for my $i (1 .. 25) {
                my $r = eval { $c->request('PUT', "/tracker/campaigns/conc-$k-$i",
                    headers => { 'Content-Type' => 'application/json' },
                    body => $JSON->encode({ %camp_x, landing_url => "https://conc.example.com/$k/$i" })) };
                $ok++ if $r && $r->{status} == 201;
            }
            $c->close;
            write_file("$WORK/conc.$k", "$ok\n");
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    waitpid($_, 0) for @kids;
    my $ok = 0;
    $ok += (read_file("$WORK/conc.$_") // 0) for 1 .. 4;
    is($ok, 100, '4 clients PUT 25 campaigns each at once: 100 x 201');
    my $f = file_campaigns();
    is(scalar(grep { /^conc-/ } keys %{ $f || {} }), 100, 'the file has all 100 (writes through never lose one)');
    is(scalar(grep { /^conc-/ } keys %{ all_campaigns()->{campaigns} }), 100, 'the zone too');
}

# --- persistence: a failed journal write --------------------------------------------------------
{
    # A directory where the journal should be makes the append fail.
    my $journal = "$CAMPAIGNS.journal";
    rename $journal, "$journal.saved" or die "rename $journal: $!";
    mkdir $journal or die "mkdir $journal: $!";
    my $file = read_file($CAMPAIGNS);
    my $log_before = length $ngx->error_log_text;
    my $r = api('PUT', '/tracker/campaigns/unwritten', { %camp_x });
    is($r->{status}, 500, 'a change whose journal write fails: 500');
    like(err_of($r), qr/campaign "unwritten" created in the shared zone.*writing it to the journal ".*campaigns\.json\.journal" failed/,
         'the error says the zone has the change and the journal write failed');
    is(read_file($CAMPAIGNS), $file, 'the file is unchanged');
    is(api('GET', '/tracker/campaigns/unwritten')->{status}, 200, 'the zone has the change');
    like(substr($ngx->error_log_text, $log_before), qr/\[error\].*tracker_admin: campaign "unwritten" created.*failed/,
         'the failure is in the error log at [error]');
    rmdir $journal;
    rename "$journal.saved", $journal or die "rename $journal.saved: $!";
    $r = api('PUT', '/tracker/campaigns/written', { %camp_x });
    is($r->{status}, 201, 'once the journal is writable again, a change succeeds');
    my $f = file_campaigns();
    ok($f && $f->{written}, 'and the journal has it');
    ok($f && !$f->{unwritten}, 'not the one whose write failed (answered 500)');
}

# --- the test clock -----------------------------------------------------------------------------
{
    my $r = api('GET', '/tracker/campaigns/_clock');
    is($r->{status}, 200, 'GET _clock');
    is($r->{json}{offset_seconds}, 0, 'offset 0');
    cmp_ok(abs($r->{json}{now_unix} - time), '<=', 2, 'now is now');
    $r = api('PUT', '/tracker/campaigns/_clock', { offset_seconds => 86400 * 3 });
    is($r->{status}, 200, 'PUT _clock: 200');
    is($r->{json}{offset_seconds}, 259200, 'offset 3 days');
    cmp_ok(abs($r->{json}{now_unix} - time - 259200), '<=', 2, 'now is 3 days ahead');
    like($r->{json}{now}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/, 'as RFC 3339 too');
    is(api('GET', '/tracker/campaigns/_clock')->{json}{offset_seconds}, 259200, 'every worker sees it') for 1 .. 4;
    is(api('PUT', '/tracker/campaigns/_clock', { offset_seconds => 'soon' })->{status}, 400, 'a bad offset: 400');
    is(api('PUT', '/tracker/campaigns/_clock', { offset => 5 })->{status}, 400, 'an unknown field: 400');
    is(api('POST', '/tracker/campaigns/_clock', {})->{status}, 405, 'POST _clock: 405');
    is(api('PUT', '/tracker/campaigns/_clock', { offset_seconds => 0 })->{json}{offset_seconds}, 0, 'back to 0');
    $r = api('PUT', '/noclock/campaigns/_clock', { offset_seconds => 60 });
    is($r->{status}, 404, 'without "tracker_admin test_clock": 404');
    like(err_of($r), qr/test clock is not enabled/, 'saying so');
    is(api('GET', '/noclock/campaigns/_clock')->{status}, 404, 'GET too');
    is(api('GET', '/tracker/campaigns/_clock')->{json}{offset_seconds}, 0, 'the clock did not move');
    ok(!file_campaigns()->{_clock}, 'the clock is not a campaign');
}

# --- reload and restart keep the changes ------------------------------------------------------
{
    my $r = api('PUT', '/tracker/campaigns/kept', { %camp_x, landing_url => 'https://kept.example.com/', total_budget => 100 });
    is($r->{status}, 201, 'PUT before the reload');
    is(api('DELETE', '/tracker/campaigns/old')->{status}, 204, 'DELETE a campaign of the original file');
    my $snap = all_campaigns();
    # The change answered 500 (its journal write failed) is live but not durable: the reload
    # undoes it, as its answer said.
    ok(delete $snap->{campaigns}{unwritten}, 'the zone has the change answered 500 before the reload');
    my %old = map { $_ => 1 } @{ $ngx->worker_pids };
    $ngx->reload;
    my $new = wait_until(15, sub {
        my $w = $ngx->worker_pids;
        (@$w == 2 && !grep { $old{$_} } @$w) ? $w : undef;
    });
    ok($new, 'the reload replaced the workers');
    my $after = all_campaigns();
    is_deeply($after->{campaigns}, $snap->{campaigns}, 'after the reload (the file re-read), every campaign is as before');
    is(api('GET', '/tracker/campaigns/kept')->{json}{total_budget}, 100, 'the PUT survived');
    is(api('GET', '/tracker/campaigns/old')->{status}, 404, 'the DELETE survived');
    is(api('GET', '/tracker/campaigns/unwritten')->{status}, 404, 'the change answered 500 did not');
    is(click('kept', 'after-reload')->{headers}{location}, 'https://kept.example.com/', 'and the tracker uses it');
    unlike($ngx->error_log_text, qr/\[emerg\]/, 'no emerg in the log (the written file loads)');

    $ngx->stop;
    $ngx->start;
    my $restarted = all_campaigns();
    is_deeply($restarted->{campaigns}, $snap->{campaigns}, 'after a restart, every campaign is as before');
}

# --- a full zone: 507, nothing changes ------------------------------------------------------
{
    my $small_file = "$WORK/small-campaigns.json";
    write_campaigns([ { id => 'tiny', status => 'active', landing_url => 'https://tiny.example.com/' } ], $small_file);
    my $small = TrackerTest::Nginx->new(workers => 2, log_level => 'info', http => <<'HTTP');
    tracker_ring      @WORK@/small.ring 1m;
    tracker_campaigns @WORK@/small-campaigns.json zone=small:64k;
    client_max_body_size 10m;
    server {
        listen @LISTEN@;
        location /tracker/campaigns { tracker_admin; }
        location = /c { tracker click; }
    }
HTTP
    $small->start;
    my $sget = sub {
        my ($method, $path, $body) = @_;
        my $r = $small->get($path, method => $method, headers => { 'Content-Type' => 'application/json' },
                            (defined $body ? (body => $JSON->encode($body)) : ()));
        $r->{json} = eval { $JSON->decode($r->{body}) } if length $r->{body};
        return $r;
    };
    my $list0 = $sget->('GET', '/tracker/campaigns?limit=1000');
    my $file0 = read_file($small_file);
    my @many = map { { id => sprintf('many-%05d', $_), status => 'active', landing_url => "https://many.example.com/$_" } } 1 .. 5000;
    my $r = $sget->('POST', '/tracker/campaigns', \@many);
    is($r->{status}, 507, 'a bulk of 5000 into a 64k zone: 507') or diag $r->{body};
    like($r->{json}{error} // '', qr/^the campaign zone is full.*nothing was changed/, 'the zone is full, nothing changed');
    my $list1 = $sget->('GET', '/tracker/campaigns?limit=1000');
    is_deeply($list1->{json}, $list0->{json}, 'the list is unchanged');
    is($list1->{json}{count}, 1, 'one campaign');
    is(read_file($small_file), $file0, 'the file is unchanged');
    is($sget->('GET', '/tracker/campaigns/many-00001')->{status}, 404, 'none of the bulk is there');
    like($small->get('/c?cid=tiny')->{headers}{location} // '', qr{^https://tiny\.example\.com/}, 'the zone still serves');

    # Fill it one by one until it is full: the last PUT gets 507, the others stay.
    my ($n, $last) = (0, 0);
    for my $i (1 .. 3000) {
        $r = $sget->('PUT', sprintf('/tracker/campaigns/one-%05d', $i), { status => 'active', landing_url => "https://one.example.com/$i" });
        $last = $r->{status};
        last if $last != 201;
        $n++;
    }
    is($last, 507, "one by one, the zone takes $n campaigns, then 507");
    cmp_ok($n, '>', 10, 'more than a handful fit');
    is($sget->('GET', '/tracker/campaigns')->{json}{count}, $n + 1, 'the count is what fitted');
    my $sf = file_campaigns($small_file);
    is(scalar(keys %{ $sf || {} }), $n + 1, 'and the file has them');
    my $d = $sget->('DELETE', '/tracker/campaigns/one-00001');
    ok($d->{status} == 204 || $d->{status} == 507, "a DELETE in a full zone: 204 or 507 ($d->{status})");
    unlike($small->error_log_text, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg in the log');
    $small->stop;
}

# --- the events ---------------------------------------------------------------------------------
$ngx->stop;
my $events = drain();
my $after_delete = events_tagged($events, 'after-delete-1');
is(scalar @$after_delete, 1, 'the click after the DELETE was recorded');
ok($after_delete->[0] && has_flag($after_delete->[0], 'unknown_campaign'), 'flagged unknown_campaign')
    or diag explain $after_delete;
my $before_delete = one_tagged($events, 'before-delete');
is_deeply($before_delete ? flags_of($before_delete) : undef, [], 'the click before the DELETE had no flag');
my $put = one_tagged($events, 'put-1');
is($put && $put->{campaign}, 'x1', 'a click right after the PUT is recorded for x1');
unlike($ngx->error_log_text, qr/\[(alert|crit|emerg)\]/, 'no alert, crit or emerg in the log');

done_testing();
