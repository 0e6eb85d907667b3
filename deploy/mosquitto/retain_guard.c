/*
 * AgriTrace retain guard: a Mosquitto 2.0 plugin (plugin interface v5) that refuses retained
 * publishes from gateways, except a small birth/will on the gateway's own status topic.
 *
 * Why a plugin: dynamic security's ACLs allow or deny a topic, whatever the retain flag; a gateway
 * allowed to publish its packs could also leave a retained pack on the broker for every future
 * subscriber. The broker hands each ACL check's retain flag to v5 plugins (MOSQ_EVT_ACL_CHECK).
 *
 * Chaining: Mosquitto 2.0 asks the ACL-check callbacks in the order the plugins are loaded and the
 * first answer other than MOSQ_ERR_PLUGIN_DEFER wins (src/security.c, mosquitto_acl_check). This
 * plugin is therefore loaded before dynamic security and answers only "denied" or "defer": it never
 * grants anything; dynamic security still decides every publish it lets through.
 *
 * Rules, for a publish (MOSQ_ACL_WRITE, which includes a will at the moment it is sent) with the
 * retain flag set, by a client whose username is not in the platform's service namespace:
 *   - allowed (deferred) on agritrace/v1/{username}/status with a payload of at most
 *     max_retained_bytes (birth/will: "online"/"offline");
 *   - denied everywhere else (MQTT 5: PUBACK 0x87 "not authorized"; MQTT 3.1.1: dropped).
 * Gateways connect with username = client id = gateway id (pinned by dynamic security).
 *
 * Options (plugin_opt_... after the `plugin` line):
 *   service_prefix      usernames starting with this may retain (default "agritrace-")
 *   max_retained_bytes  largest retained status payload a gateway may leave (default 256)
 *
 * Build: gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o mosquitto_retain_guard.so retain_guard.c
 * (headers from Debian's mosquitto-dev + libmosquitto-dev, Alpine's mosquitto-dev).
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define TOPIC_PREFIX "agritrace/v1/"
#define STATUS_SUFFIX "/status"

struct guard {
	mosquitto_plugin_id_t *id;
	char service_prefix[64];
	long max_retained_bytes;
};

static struct guard guard = {NULL, "agritrace-", 256};

/* Whether `topic` is exactly agritrace/v1/{username}/status. */
static bool own_status_topic(const char *topic, const char *username)
{
	size_t plen = strlen(TOPIC_PREFIX), ulen = strlen(username);

	if(strncmp(topic, TOPIC_PREFIX, plen) != 0) return false;
	topic += plen;
	if(strncmp(topic, username, ulen) != 0) return false;
	return strcmp(topic + ulen, STATUS_SUFFIX) == 0;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username;
	(void)event;
	(void)userdata;

	if(ed->access != MOSQ_ACL_WRITE || !ed->retain) return MOSQ_ERR_PLUGIN_DEFER;

	username = mosquitto_client_username(ed->client);
	if(username && guard.service_prefix[0]
			&& strncmp(username, guard.service_prefix, strlen(guard.service_prefix)) == 0){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	if(username && username[0] && strchr(username, '/') == NULL
			&& own_status_topic(ed->topic, username)
			&& (long)ed->payloadlen <= guard.max_retained_bytes){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	mosquitto_log_printf(MOSQ_LOG_DEBUG, "retain_guard: denied a retained publish by '%s' on '%s' (%u bytes)",
			username ? username : "", ed->topic, ed->payloadlen);
	return MOSQ_ERR_ACL_DENIED;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	int i;

	for(i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *options, int option_count)
{
	int i;
	char *end;

	for(i = 0; i < option_count; i++){
		if(strcmp(options[i].key, "service_prefix") == 0){
			if(strlen(options[i].value) >= sizeof(guard.service_prefix)){
				mosquitto_log_printf(MOSQ_LOG_ERR, "retain_guard: service_prefix is too long");
				return MOSQ_ERR_INVAL;
			}
			strcpy(guard.service_prefix, options[i].value);
		}else if(strcmp(options[i].key, "max_retained_bytes") == 0){
			guard.max_retained_bytes = strtol(options[i].value, &end, 10);
			if(*options[i].value == '\0' || *end != '\0' || guard.max_retained_bytes < 0){
				mosquitto_log_printf(MOSQ_LOG_ERR, "retain_guard: max_retained_bytes must be a number >= 0");
				return MOSQ_ERR_INVAL;
			}
		}
	}
	guard.id = identifier;
	*userdata = &guard;
	mosquitto_log_printf(MOSQ_LOG_INFO,
			"retain_guard: gateways may retain only their status (at most %ld bytes); service prefix '%s'",
			guard.max_retained_bytes, guard.service_prefix);
	return mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, &guard);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	return mosquitto_callback_unregister(guard.id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
}
