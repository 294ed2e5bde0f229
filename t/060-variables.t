# $tracker_event_id, $tracker_campaign and $tracker_click_id: in an access log (log_format) and
# in add_header (evaluated when the headers go out, after the handler); they match the stored
# events, and are empty in locations without tracker and before the handler runs.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::Nginx::Socket 'no_plan';
use Test::More import => [qw(subtest explain cmp_ok)];

repeat_each(1);
no_shuffle();
no_long_string();

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/summer?k={click_id}' },
]);

run_tests();

# ---------------------------------------------------------------------------------------------
my $events = drain();
my %log;
for my $line (@{ read_log("$ENV{TEST_NGINX_WORKDIR}/vars.log") }) {
    my ($tag, $status, $eid, $campaign, $click, $xevent, $xclick) = split /\|/, $line, -1;
    $log{$tag} = { status => $status, eid => $eid, campaign => $campaign, click => $click,
                   xevent => $xevent, xclick => $xclick };
}

sub check_vars {
    my ($tag, %want) = @_;
    subtest "variables of $tag" => sub {
        my $l = $log{$tag} or return fail("no log line for $tag");
        my $e = one_tagged($events, $tag) or return fail("no single event for $tag");
        like($l->{eid}, qr/^[0-9a-f]{32}$/, '$tracker_event_id is 32 hex');
        is($l->{eid}, $e->{id}, '$tracker_event_id = the stored id');
        is($l->{xevent}, $e->{id}, 'add_header X-Event $tracker_event_id = the stored id');
        my $camp = ($e->{campaign} // '') eq '' ? '-' : $e->{campaign};
        is($l->{campaign}, $camp, '$tracker_campaign = the stored campaign');
        is($l->{campaign}, $want{campaign}, "\$tracker_campaign is $want{campaign}");
        my $click = defined $e->{click_id} && $e->{click_id} ne '' ? $e->{click_id} : '-';
        is($l->{click}, $click, '$tracker_click_id = the stored click_id');
        is($l->{click}, $want{click}, "\$tracker_click_id is $want{click}") if defined $want{click};
        is($l->{xclick}, $l->{click}, 'add_header X-Click $tracker_click_id') if $l->{status} != 404;
    };
}

check_vars('var-imp', campaign => 'summer', click => '-');
check_vars('var-click', campaign => 'summer', click => $log{'var-click'} && $log{'var-click'}{eid});
check_vars('var-cv', campaign => 'summer', click => 'abc123');
check_vars('var-invalid', campaign => '-');
check_vars('var-unknown', campaign => 'nope');
check_vars('var-click404', campaign => 'nope', click => $log{'var-click404'} && $log{'var-click404'}{eid});

for my $tag (qw(var-plain var-405)) {
    my $l = $log{$tag};
    ok($l, "log line for $tag") or next;
    is(join(',', @$l{qw(eid campaign click xevent)}), '-,-,-,-', "$tag: all tracker variables empty");
}
is(scalar @{ events_tagged($events, 'var-405') }, 0, 'no event for the 405');

my %logged = map { $_->{eid} => 1 } grep { $_->{eid} ne '-' } values %log;
my %stored = map { $_->{id} => 1 } @$events;
is_deeply(\%logged, \%stored, 'the logged ids are exactly the stored ids');

__DATA__

=== TEST 1: impression: X-Event is the event id, no click id
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format vars '$arg_t|$status|$tracker_event_id|$tracker_campaign|$tracker_click_id|$sent_http_x_event|$sent_http_x_click';
--- config
    tracker_dimension t $arg_t;
    access_log $TEST_NGINX_WORKDIR/vars.log vars;
    add_header X-Event $tracker_event_id always;
    add_header X-Click $tracker_click_id always;
    location = /i  { tracker impression; }
--- request
GET /i?cid=summer&t=var-imp
--- response_headers_like
X-Event: ^[0-9a-f]{32}$
--- raw_response_headers_unlike
X-Click:



=== TEST 2: click: $tracker_click_id is the click's own id
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format vars '$arg_t|$status|$tracker_event_id|$tracker_campaign|$tracker_click_id|$sent_http_x_event|$sent_http_x_click';
--- config
    tracker_dimension t $arg_t;
    access_log $TEST_NGINX_WORKDIR/vars.log vars;
    add_header X-Event $tracker_event_id always;
    add_header X-Click $tracker_click_id always;
    location = /c  { tracker click; }
--- request eval
["GET /c?cid=summer&t=var-click", "GET /c?cid=nope&t=var-click404"]
--- error_code eval
[302, 404]
--- response_headers_like eval
["X-Event: ^[0-9a-f]{32}\$\nX-Click: ^[0-9a-f]{32}\$\nLocation: ^https://shop\\.example\\.com/summer\\?k=[0-9a-f]{32}\$",
 ""]



=== TEST 3: conversion: $tracker_click_id is the click id it carried
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format vars '$arg_t|$status|$tracker_event_id|$tracker_campaign|$tracker_click_id|$sent_http_x_event|$sent_http_x_click';
--- config
    tracker_dimension t $arg_t;
    access_log $TEST_NGINX_WORKDIR/vars.log vars;
    add_header X-Event $tracker_event_id always;
    add_header X-Click $tracker_click_id always;
    location = /cv { tracker conversion; }
--- request
GET /cv?cid=summer&t=var-cv&click_id=abc123
--- response_headers_like
X-Click: abc123
X-Event: ^[0-9a-f]{32}$



=== TEST 4: invalid and unknown campaigns: $tracker_campaign empty / as sent
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format vars '$arg_t|$status|$tracker_event_id|$tracker_campaign|$tracker_click_id|$sent_http_x_event|$sent_http_x_click';
--- config
    tracker_dimension t $arg_t;
    access_log $TEST_NGINX_WORKDIR/vars.log vars;
    add_header X-Event $tracker_event_id always;
    add_header X-Click $tracker_click_id always;
    location = /i  { tracker impression; tracker_invalid flag; }
--- request eval
["GET /i?cid=../x&t=var-invalid", "GET /i?cid=nope&t=var-unknown"]
--- response_headers_like eval
["X-Event: ^[0-9a-f]{32}\$", "X-Event: ^[0-9a-f]{32}\$"]



=== TEST 5: empty outside tracker locations, for refused methods, and before the handler
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    log_format vars '$arg_t|$status|$tracker_event_id|$tracker_campaign|$tracker_click_id|$sent_http_x_event|$sent_http_x_click';
--- config
    tracker_dimension t $arg_t;
    access_log $TEST_NGINX_WORKDIR/vars.log vars;
    add_header X-Event $tracker_event_id always;
    add_header X-Click $tracker_click_id always;
    location = /i  { tracker impression; }
    location = /plain {
        return 200 "e=[$tracker_event_id] c=[$tracker_campaign] k=[$tracker_click_id]\n";
    }
    location = /early {
        set $early "[$tracker_event_id]";
        add_header X-Early $early;
        tracker impression;
    }
--- request eval
["GET /plain?cid=summer&t=var-plain", "PUT /i?cid=summer&t=var-405\nx", "GET /early?cid=summer&t=var-early"]
--- error_code eval
[200, 405, 200]
--- response_body_like eval
["^e=\\[\\] c=\\[\\] k=\\[\\]\n\$", "405", "^GIF89a"]
--- raw_response_headers_unlike eval
[qr/X-Event/, qr/X-Event/, qr/X-Event/]
--- response_headers eval
["", "", "X-Early: []"]
