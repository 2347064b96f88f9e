/* Build-time check used by deploy/docker/Dockerfile: exits 1 unless librdkafka was built with every
 * feature that docs/security.md relies on. librdkafka refuses to set `builtin.features` to a list
 * naming a feature it lacks (e.g. `oidc` without libcurl). */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
int main(void) {
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "builtin.features",
            "ssl,sasl,sasl_plain,sasl_scram,sasl_gssapi,sasl_oauthbearer,http,oidc,zstd,lz4",
            err, sizeof err) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "librdkafka lacks a required feature: %s\n", err);
        return 1;
    }
    printf("librdkafka %s has every required feature\n", rd_kafka_version_str());
    rd_kafka_conf_destroy(conf);
    return 0;
}
