# Smoke test: the module loads into nginx (TEST_NGINX_LOAD_MODULES), a pixel location answers
# 200 with the 43-byte transparent GIF, and a tracker location without tracker_ring is refused.
# TrackerTest makes the server listen on 127.0.0.1 only and gives each file its own ring path
# ($TEST_NGINX_RING, in a temporary directory).
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use TrackerTest;
use Test::Nginx::Socket 'no_plan';

repeat_each(1);
no_shuffle();
no_long_string();

add_block_preprocessor(sub {
    my $block = shift;
    # The expected [emerg] goes to stderr as well: keep the prove output clean.
    $block->set_value('suppress_stderr', 1) if defined $block->must_die;
});

run_tests();

__DATA__

=== TEST 1: the module loads and an impression pixel answers with the 43-byte GIF
--- http_config
    tracker_ring $TEST_NGINX_RING 1m;
--- config
    location = /i { tracker impression; }
--- request
GET /i?cid=smoke&pub=test
--- error_code: 200
--- response_headers
Content-Type: image/gif
Content-Length: 43
--- response_body eval
"GIF89a\x01\x00\x01\x00\x80\x01\x00\x00\x00\x00\xff\xff\xff"
. "\x21\xf9\x04\x01\x00\x00\x01\x00\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00"
. "\x02\x02\x4c\x01\x00\x3b"
--- no_error_log
[alert]
[crit]
[emerg]



=== TEST 2: a tracker location without tracker_ring does not start
--- config
    location = /i { tracker impression; }
--- must_die
--- error_log
[emerg]
tracker_ring
