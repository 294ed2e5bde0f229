# Configuration errors: every bad directive value, context, missing tracker_ring and bad
# campaigns file stops nginx with an [emerg] naming the directive (and the campaigns file line),
# checked through --- must_die; a file that is not a ring is refused and left untouched; and
# `nginx -t` reports the same.
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

add_block_preprocessor(sub {
    my $block = shift;
    # nginx prints the [emerg] on stderr too; the error log check is what counts.
    $block->set_value('suppress_stderr', 1) if defined $block->must_die && !$ENV{TRACKER_TEST_VERBOSE};
});

write_campaigns([
    { id => 'summer', status => 'active', landing_url => 'https://shop.example.com/summer' },
]);

# A file that is not a ring: nginx must refuse it and never overwrite it.
our $NOT_A_RING = "this is not a ring, keep me\n" x 400;
write_file("$ENV{TEST_NGINX_WORKDIR}/not-a-ring.bin", $NOT_A_RING);
write_file("$ENV{TEST_NGINX_WORKDIR}/short.bin", "short\n");

# 2000 campaigns with long URLs: far more than a 64k zone holds.
our $MANY = "[\n" . join(",\n", map {
    sprintf '  {"id": "c%d", "status": "active", "landing_url": "https://shop.example.com/%s?n=%d"}', $_, 'x' x 200, $_
} 1 .. 2000) . "\n]\n";

# 32 dimensions in one location are allowed, 33 are one too many.
our $DIMS32 = join '', map { "tracker_dimension d$_ \$arg_d$_;\n" } 1 .. 32;
our $DIMS33 = join '', map { "tracker_dimension d$_ \$arg_d$_;\n" } 1 .. 33;

run_tests();

# ---------------------------------------------------------------------------------------------
is(read_file("$ENV{TEST_NGINX_WORKDIR}/not-a-ring.bin"), $NOT_A_RING, 'a file that is not a ring is left untouched');
is(read_file("$ENV{TEST_NGINX_WORKDIR}/short.bin"), "short\n", 'a short file that is not a ring is left untouched');

subtest 'nginx -t names the campaigns file and line' => sub {
    my $bad = "$ENV{TEST_NGINX_WORKDIR}/t-bad.json";
    write_file($bad, qq{[\n  {"id": "a", "status": "active", "landing_url": "https://a.example.com/"},\n  {"id": "b", "status": "active", "landing_url": "gopher://b.example.com/"}\n]\n});
    my $ngx = TrackerTest::Nginx->new(http => <<"HTTP");
    tracker_ring      \@WORK\@/t-ring 1m;
    tracker_campaigns $bad zone=tc:1m;
    server {
        listen \@LISTEN\@;
        location = /i { tracker impression; }
    }
HTTP
    my ($rc, $out) = $ngx->test_conf;
    isnt($rc, 0, 'nginx -t fails');
    like($out, qr/\[emerg\].*tracker_campaigns.*t-bad\.json.*line 3/, 'the message names the file and line 3');
    like($out, qr/test failed/, 'nginx -t says the test failed');

    # A misspelt budget field is refused, never ignored.
    write_file($bad, qq{[\n  {"id": "a", "status": "active", "landing_url": "https://a.example.com/", "dayly_budget": 5}\n]\n});
    ($rc, $out) = $ngx->test_conf;
    isnt($rc, 0, 'nginx -t fails on an unknown campaign field');
    like($out, qr/\[emerg\].*t-bad\.json.*line 2: campaign "a": unknown field "dayly_budget"/, 'the message names the field');
    write_file($bad, qq{[\n  {"id": "a", "status": "active", "landing_url": "https://a.example.com/", "daily_budget": "lots"}\n]\n});
    ($rc, $out) = $ngx->test_conf;
    like($out, qr/campaign "a": daily_budget: must be a number/, 'a bad budget value names the field');

    write_campaigns([{ id => 'a', status => 'active', landing_url => 'https://a.example.com/' }], $bad);
    ($rc, $out) = $ngx->test_conf;
    is($rc, 0, 'nginx -t passes once the file is fixed') or diag $out;
};

__DATA__

=== TEST 1: control: a good configuration starts and serves
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    tracker_dimension publisher $arg_pub;
    tracker_ip full;
    tracker_unknown_campaign count;
    tracker_ring_full 503;
    tracker_fallback_url "https://fallback.example.com/?c={campaign}&k={click_id}&p={dim.publisher}";
    location = /i { tracker impression response=gif; }
    location = /b { tracker sign_up-2 response=empty; }
--- request
GET /i?cid=summer
--- response_headers
Content-Type: image/gif
--- no_error_log
[emerg]



=== TEST 1b: control: 32 dimensions in one location
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config eval
"location = /i { tracker impression;\n$::DIMS32 }"
--- request
GET /i?cid=summer&d1=a&d32=b
--- response_headers
Content-Type: image/gif
--- no_error_log
[emerg]



=== TEST 2: tracker without tracker_ring
--- http_config
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] (?=.*"tracker_ring")(?=.*nginx\.conf:\d+)/



=== TEST 3: tracker_ring: bad size
--- http_config
    tracker_ring $TEST_NGINX_RING 12q;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"12q".*"tracker_ring".* in \S*nginx\.conf:\d+/



=== TEST 4: tracker_ring: relative path
--- http_config
    tracker_ring var/events.ring 1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_ring".*var\/events\.ring.*absolute/



=== TEST 5: tracker_ring: smaller than 64k
--- http_config
    tracker_ring $TEST_NGINX_RING 32k;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"32k".*"tracker_ring".*64k/



=== TEST 6: tracker_ring: duplicate
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_ring" directive is duplicate/



=== TEST 7: tracker_ring in a server block
--- http_config
--- config
    tracker_ring $TEST_NGINX_RING 1m;
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_ring" directive is not allowed here in \S*nginx\.conf:\d+/



=== TEST 8: tracker_ring: a file that is not a ring is refused
--- http_config
    tracker_ring $TEST_NGINX_WORKDIR/not-a-ring.bin 1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_ring".*not-a-ring\.bin/



=== TEST 9: tracker_ring: a short file that is not a ring is refused
--- http_config
    tracker_ring $TEST_NGINX_WORKDIR/short.bin 1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_ring".*short\.bin/



=== TEST 10: tracker: unknown response parameter
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker impression response=json; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"response=json".*"tracker"/



=== TEST 11: tracker: too many parameters
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker impression response=gif extra; }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid number of arguments in "tracker" directive/



=== TEST 12: tracker: bad type name
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker bad.type; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"bad\.type".*"tracker"/



=== TEST 13: tracker: type name longer than 64 characters
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config eval
"location = /i { tracker " . ("t" x 65) . "; }"
--- must_die
--- error_log eval
qr/\[emerg\] .*"t{65}".*"tracker"/



=== TEST 14: tracker: twice in one location
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker impression; tracker click; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker" directive is duplicate/



=== TEST 15: tracker in a server block
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    tracker impression;
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker" directive is not allowed here/



=== TEST 16: tracker_ip: bad value
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    tracker_ip partial;
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"partial".*"tracker_ip"/



=== TEST 17: tracker_unknown_campaign: bad value
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker impression; tracker_unknown_campaign drop; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"drop".*"tracker_unknown_campaign"/



=== TEST 18: tracker_ring_full: bad value
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker impression; tracker_ring_full 502; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"502".*"tracker_ring_full"/



=== TEST 19: tracker_dimension: bad name
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    tracker_dimension pub-lisher $arg_pub;
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"pub-lisher".*"tracker_dimension"/



=== TEST 20: tracker_dimension: duplicate name
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    tracker_dimension publisher $arg_pub;
    tracker_dimension publisher $arg_p;
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] (?=.*duplicate)(?=.*"publisher").*"tracker_dimension"/



=== TEST 21: tracker_dimension: 33 in one location
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config eval
"location = /i { tracker impression;\n$::DIMS33 }"
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_dimension".*\b32\b/



=== TEST 22: tracker_campaign_id: empty value
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    tracker_campaign_id "";
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaign_id"/



=== TEST 23: tracker_fallback_url: not http(s)
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /c { tracker click; tracker_fallback_url ftp://files.example.com/; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"ftp:\/\/files\.example\.com\/".*"tracker_fallback_url"/



=== TEST 24: tracker_fallback_url: macro in the host
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /c { tracker click; tracker_fallback_url "https://{campaign}.example.com/"; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"https:\/\/\{campaign\}\.example\.com\/".*"tracker_fallback_url"/



=== TEST 25: tracker_fallback_url: unknown macro
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /c { tracker click; tracker_fallback_url "https://example.com/?x={nope}"; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"https:\/\/example\.com\/\?x=\{nope\}".*"tracker_fallback_url"/



=== TEST 26: tracker_campaigns: missing file
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_WORKDIR/missing.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*missing\.json.*No such file/



=== TEST 27: tracker_campaigns: bad JSON names the line
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/bad.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> bad.json
[
  {"id": "a", "status": "active", "landing_url": "https://a.example.com/"},
  {"id": "b", "status": "active" "landing_url": "https://b.example.com/"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*bad\.json.*line 3\b/



=== TEST 28: tracker_campaigns: not an array
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/obj.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> obj.json
{"id": "a", "status": "active", "landing_url": "https://a.example.com/"}
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*obj\.json.*line 1\b/



=== TEST 29: tracker_campaigns: missing landing_url
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/nourl.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> nourl.json
[
  {"id": "a", "status": "active", "landing_url": "https://a.example.com/"},
  {"id": "b", "status": "active"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*nourl\.json.*line 3\b.*landing_url/



=== TEST 30: tracker_campaigns: ftp:// landing URL
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/ftp.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> ftp.json
[
  {"id": "a", "status": "active", "landing_url": "ftp://a.example.com/"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*ftp\.json.*line 2\b.*(scheme|ftp)/



=== TEST 31: tracker_campaigns: macro in the host
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/host.json zone=campaigns:1m;
--- config
    tracker_dimension publisher $arg_pub;
    location = /i { tracker impression; }
--- user_files
>>> host.json
[
  {"id": "a", "status": "active", "landing_url": "https://a.example.com/"},
  {"id": "b", "status": "active", "landing_url": "https://{dim.publisher}.example.com/"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*host\.json.*line 3\b/



=== TEST 32: tracker_campaigns: unknown macro
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/macro.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> macro.json
[
  {"id": "a", "status": "active", "landing_url": "https://a.example.com/?x={bogus}"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*macro\.json.*line 2\b.*(macro|bogus)/



=== TEST 33: tracker_campaigns: duplicate id
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/dup.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> dup.json
[
  {"id": "a", "status": "active", "landing_url": "https://a.example.com/"},
  {"id": "b", "status": "active", "landing_url": "https://b.example.com/"},
  {"id": "a", "status": "paused", "landing_url": "https://c.example.com/"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*dup\.json.*line 4\b.*(?i:duplicate)/



=== TEST 34: tracker_campaigns: bad status
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/status.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> status.json
[
  {"id": "a", "status": "running", "landing_url": "https://a.example.com/"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*status\.json.*line 2\b.*(status|running)/



=== TEST 35: tracker_campaigns: bad id
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/id.json zone=campaigns:1m;
--- config
    location = /i { tracker impression; }
--- user_files
>>> id.json
[
  {"id": "a b/c", "status": "active", "landing_url": "https://a.example.com/"}
]
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns".*id\.json.*line 2\b/



=== TEST 36: tracker_campaigns: parameter other than zone=
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS size=1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"size=1m".*"tracker_campaigns"/



=== TEST 37: tracker_campaigns: zone without a size
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"zone=campaigns".*"tracker_campaigns"/



=== TEST 38: tracker_campaigns: zone too small
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:16k;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"16k".*"tracker_campaigns"/



=== TEST 39: tracker_campaigns: more campaigns than the zone holds
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_SERVER_ROOT/html/many.json zone=campaigns:64k;
--- config
    location = /i { tracker impression; }
--- user_files eval
">>> many.json\n$::MANY"
--- must_die
--- error_log eval
qr/\[emerg\] .*tracker_campaigns.*zone "campaigns"/



=== TEST 40: tracker_campaigns: duplicate
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns2:1m;
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns" directive is duplicate/



=== TEST 41: tracker_campaigns in a server block
--- http_config
    tracker_ring      $TEST_NGINX_RING 1m;
--- config
    tracker_campaigns $TEST_NGINX_CAMPAIGNS zone=campaigns:1m;
    location = /i { tracker impression; }
--- must_die
--- error_log eval
qr/\[emerg\] .*"tracker_campaigns" directive is not allowed here/
