/*
 * crc32c — CRC-32C (Castagnoli), the checksum of stored records.
 *
 * Design notes: SSE4.2's crc32 instruction when the CPU has it (checked once
 * at run time), otherwise a slicing-by-8 table. Both give the same value
 * (tests/unit/test_proto.c checks the standard test vector).
 */
#ifndef ES_CRC32C_H
#define ES_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/** @brief CRC-32C of buf[0..len), continuing from crc (start with 0). */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/** @brief The portable implementation, exposed so tests can compare. */
uint32_t crc32c_sw(uint32_t crc, const void *buf, size_t len);

#endif
