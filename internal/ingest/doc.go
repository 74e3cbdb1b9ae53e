// Package ingest is closedloop's webhook front: a small HTTP server that takes each CRM's
// webhooks, verifies them over the raw bytes, and publishes them to Kafka, answering the
// CRM 2xx only once Kafka has acknowledged every message of the request. Kafka stays the
// spine: the worker and replays read the topic as they always did. The server holds no
// state, so any number of them can run behind a load balancer.
//
//	POST /webhooks/<source>  ─► concurrency slot (else 503) ─► body ≤ max_body (else 413)
//	  ─► verify per CRM (else 401, closedloop_ingest_refused_total{source,reason})
//	  ─► split per CRM record ─► producer (coalescing, acks=all) ─► 200 (503 if Kafka fails)
//
// `closedloop ingest --config FILE` runs it alone; `closedloop run` runs it beside the
// worker when ingest.listen is set. Shutdown (Serve's ctx ending) stops accepting, lets the
// requests in flight finish their publish and answer, then closes the producer.
//
// # Verification
//
// Every check runs over the body exactly as received, before anything is parsed or
// published, and compares with crypto/hmac.Equal or crypto/subtle. A failure is a
// *RefusedError whose Reason (missing_header, bad_signature, bad_timestamp,
// stale_timestamp, bad_credentials, unknown_organization, unreadable,
// version_not_allowed) is all that is logged or counted: no body, secret, header value
// or signature ever reaches a log line or an error.
//
//   - hubspot: X-HubSpot-Signature-v3 = base64(HMAC-SHA256(client secret, method + URI +
//     body + X-HubSpot-Request-Timestamp)), the timestamp in epoch milliseconds within
//     max_age, the URI being public_url (plus the query) with %3A %2F %3F %40 %21 %24 %27
//     %28 %29 %2A %2C %3B decoded. Without a v3 header, X-HubSpot-Signature per
//     X-HubSpot-Signature-Version: v2 = hex(SHA-256(secret + method + URI + body)), v1 =
//     hex(SHA-256(secret + body)); neither has a timestamp, so signature_versions: [v3]
//     refuses them. https://developers.hubspot.com/docs/apps/developer-platform/build-apps/authentication/request-validation
//     (and the legacy pages legacydocs.hubspot.com/docs/faq/v1-request-validation and
//     v2-request-validation, whose worked examples are test vectors in verify_test.go).
//   - close: close-sig-hash = hex(HMAC-SHA256(hex-decoded signature_key,
//     close-sig-timestamp + body)), the timestamp in epoch seconds within max_age.
//     https://developer.close.com/topics/webhooks/ ("Webhook signatures").
//   - attio: Attio-Signature (or its duplicate X-Attio-Signature) = hex(HMAC-SHA256(webhook
//     secret, body)). https://docs.attio.com/rest-api/guides/webhooks ("Authenticating").
//   - pipedrive: HTTP Basic auth, the user and password set on the webhook
//     (http_auth_user, http_auth_password); Pipedrive signs nothing.
//     https://pipedrive.readme.io/docs/guide-for-webhooks
//   - salesforce: Outbound Messages are not signed; the notifications' OrganizationId must
//     be in organization_ids (Salesforce's own advice, with its client certificate checked
//     by the TLS terminator in front), and the answer is the exact SOAP
//     notificationsResponse Ack (SalesforceAck) so Salesforce stops resending.
//     https://developer.salesforce.com/docs/platform/api/guide/sforce-api-om-outboundmessaging-wsdl.html
//   - canonical (custom relays): X-Closedloop-Signature: t=<epoch seconds>,v1=<hex
//     HMAC-SHA256(secret, "<t>.<body>")>, within max_age; several v1= entries may be listed
//     during a secret rotation. Sign builds it.
//
// # Publishing
//
// Each verified request becomes one message per CRM record, keyed by
// crm.SubjectKey(source, object type, id) ("hubspot:deal:9001") so one record's changes
// stay in order on one partition: a HubSpot or Attio batch is split into one batch per
// record (the raw events kept, in order), a Salesforce outbound message into one SOAP
// message per sObject (the envelope kept byte for byte). Headers: closedloop-format (the
// CRM kind, which the consumer decodes by), closedloop-ingest-source (the source name),
// closedloop-received-at (RFC 3339, UTC) and closedloop-event-id (the CRM's event ids,
// when it has them). A verified body the splitter cannot key is published whole, keyed
// by the source name, and the consumer dead-letters it with the decoder's reason.
//
// The request is answered 200 only when the producer (producer.go) reports every one of
// its messages acknowledged with acks=all; any error, or publish_timeout passing, is a
// 503 with Retry-After, and the CRM retries (messages of a failed request that did reach
// Kafka are published again by that retry; the pipeline is idempotent by conversion key).
// The producer keeps one produce request in flight per partition and sends the messages
// of all requests that arrived meanwhile in the next one, as soon as the previous is
// answered: no linger when idle, bigger produce requests when busy, and one partition's
// produce requests never overlap, so a record's messages keep their order, retries
// included. Calls whose request already gave up are left out of the next produce request.
//
// Depends on kafka-go, prometheus, zap and crm.SubjectKey; not on the consumer. See
// config.go for the `ingest:` config section.
package ingest
