#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

/* Swift does not import C variadic functions: pushes one error (with its round-trip time in ms)
 * onto one mock broker's error stack for an API key. */
static inline rd_kafka_resp_err_t swift_rd_kafka_mock_broker_push_request_error(
    rd_kafka_mock_cluster_t *mcluster, int32_t broker_id, int16_t api_key, rd_kafka_resp_err_t err, int rtt_ms) {
    return rd_kafka_mock_broker_push_request_error_rtts(mcluster, broker_id, api_key, 1, err, rtt_ms);
}

#ifdef __linux__
#include <sys/prctl.h>
#endif

/* Names the calling thread as the OS shows it (Linux keeps 15 bytes): Foundation's Thread.name
 * does not reach the OS thread on Linux, so profiles and /proc would show the creator's name. */
static inline void swift_rd_kafka_name_current_thread(const char *name) {
#ifdef __linux__
    prctl(PR_SET_NAME, name, 0, 0, 0);
#endif
}
