/*
 * support — the test-support library in one include: esd as a child
 * process of a test (esd_proc.h) and raw frames and sockets to talk to it
 * (frames.h). Plain test programs add rel.h; the client unit tests
 * fake_server.h; the in-process handler tests server_harness.h.
 */
#ifndef ES_TEST_SUPPORT_H
#define ES_TEST_SUPPORT_H

#include "esd_proc.h"
#include "frames.h"

#endif
