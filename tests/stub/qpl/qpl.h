/*
 * Declarations-only stand-in for Intel QPL's <qpl/qpl.h>.
 *
 * It exists only so that 'make qpl-check' compiles deflate-page's hardware
 * path (src/codec/deflate_qpl.c) on machines without QPL, which Debian does
 * not package: nothing links against it and nothing may. It declares just the
 * types, enumerators, flags and functions that file uses, with the names and
 * shapes of QPL's public job API (intel.github.io/qpl, "Job APIs", "Job
 * Structure", "Common Definitions"). The values are placeholders and need not
 * match the real library; a real build uses the real header.
 */
#ifndef VMIG_STUB_QPL_H
#define VMIG_STUB_QPL_H

#include <stdint.h>

typedef enum {
    QPL_STS_OK = 0,
    QPL_STS_QUEUES_ARE_BUSY_ERR = 6,
    QPL_STS_MORE_OUTPUT_NEEDED = 2,
} qpl_status;

typedef enum {
    qpl_path_auto = 0,
    qpl_path_hardware = 1,
    qpl_path_software = 2,
} qpl_path_t;

typedef enum {
    qpl_op_decompress = 0x00,
    qpl_op_compress = 0x01,
} qpl_operation;

typedef enum {
    qpl_level_1 = 1,
    qpl_default_level = qpl_level_1,
    qpl_high_level = 3,
} qpl_compression_levels;

#define QPL_FLAG_FIRST           0x0001U
#define QPL_FLAG_LAST            0x0002U
#define QPL_FLAG_DYNAMIC_HUFFMAN 0x2000U
#define QPL_FLAG_OMIT_VERIFY     0x4000U

typedef struct {
    uint8_t *next_in_ptr;
    uint32_t available_in;
    uint32_t total_in;
    uint8_t *next_out_ptr;
    uint32_t available_out;
    uint32_t total_out;
    qpl_operation op;
    uint32_t flags;
    qpl_compression_levels level;
    /* The real structure has many more fields and internal state. */
} qpl_job;

qpl_status qpl_get_job_size(qpl_path_t qpl_path, uint32_t *job_size_ptr);
qpl_status qpl_init_job(qpl_path_t qpl_path, qpl_job *qpl_job_ptr);
qpl_status qpl_submit_job(qpl_job *qpl_job_ptr);
qpl_status qpl_wait_job(qpl_job *qpl_job_ptr);
qpl_status qpl_fini_job(qpl_job *qpl_job_ptr);

#endif /* VMIG_STUB_QPL_H */
