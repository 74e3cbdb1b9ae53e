// Package crmsandbox is a local HTTP server emulating the CRM API endpoints closedloop's
// enricher reads (HubSpot CRM v3/v4 batch reads, Pipedrive API v2 deals and persons, Close
// API v1 opportunities and leads, Salesforce's OAuth token endpoint and SOQL query resource,
// Attio v2 records and list entries), with their auth, their response shapes, their error
// bodies and their rate-limit headers, and faults to inject (429 with each CRM's own
// headers — for Salesforce its 403 REQUEST_LIMIT_EXCEEDED —, 5xx, 401, 404, slow answers). It counts every request and every object read, so
// tests and the benchmark can check that nothing is fetched more often than the enricher's
// cache allows. It serves tests, the demo and the benchmark; never production.
//
// Depends on net/http only. A Server is safe for concurrent use.
//
//	sb := crmsandbox.New()
//	sb.AddDeal(crmsandbox.HubSpot, crmsandbox.Deal{ID: "9001", Amount: "1500", Currency: "EUR", ContactIDs: []string{"51"}})
//	sb.AddContact(crmsandbox.HubSpot, crmsandbox.Contact{ID: "51", Emails: []string{"jane@example.com"}})
//	srv := httptest.NewServer(sb)
//	sb.Inject(crmsandbox.HubSpot, crmsandbox.Fault{Status: 429, Times: 2})
package crmsandbox
