#include "config.h"

#include <string.h>

#include "auth_limiter.h"
#include "frame.h"
#include "store.h"

void server_config_defaults(server_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen = "127.0.0.1:7400";
    cfg->data_dir = "esd-data";
    cfg->sync = true;
    cfg->sync_method = "journal";
    cfg->journal_bytes = STORE_DEFAULT_JOURNAL_BYTES;
    cfg->map_size = 0;
    cfg->max_frame_bytes = FRAME_DEFAULT_MAX_BODY;
    cfg->max_connections = 1024;
    cfg->idle_timeout_s = 300;
    cfg->handshake_timeout_s = 10;
    cfg->frame_timeout_s = 30;
    cfg->max_in_flight = 1024;
    cfg->max_output_bytes = FRAME_DEFAULT_MAX_BODY;
    cfg->max_pending_bytes = 64ull * 1024u * 1024u;
    cfg->max_memory = 0; /* options_parse: a quarter of the RAM */
    cfg->slow_consumer_timeout_s = 30;
    cfg->max_events_per_append = STORE_DEFAULT_MAX_EVENTS_PER_APPEND;
    cfg->max_event_bytes = STORE_DEFAULT_MAX_EVENT_BYTES;
    cfg->max_page = STORE_DEFAULT_MAX_PAGE;
    cfg->max_batch = 1024;
    cfg->scavenge_slice = 250;
    cfg->scavenge_interval_ms = 1000;
    cfg->log_level = LOG_INFO;
    cfg->auth_failures = AUTH_FAIL_BURST;
    cfg->auth_global_rate = AUTH_GLOBAL_RATE;
    cfg->max_prehello = 256;
    cfg->http_max_conns = 256;
    cfg->slow_request_ms = 1000;
    cfg->relay_stream = "esd";
    cfg->relay_subject = "es";
    cfg->relay_replicas = 1;
    cfg->follow_stream = "esd";
}
