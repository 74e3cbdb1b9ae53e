// Package sandbox is a local HTTP server that emulates the ad platform APIs closedloop
// uploads to, so tests, the demo and the benchmark can run the real uploaders end to end.
// It is the platform-neutral core: the server, the fault dice, the counts and the token
// store. Each platform's emulation lives in the platform's own package (uploader/<platform>/
// sandbox.go, listing its endpoints), exported as a Mount in its uploader.Spec.Sandbox;
// uploader/platforms.NewSandbox mounts every registered platform, sandbox.New mounts the
// ones it is given:
//
//	srv := platforms.NewSandbox(sandbox.Options{Seed: 1}, log) // or sandbox.New(opts, log, <platform>.Sandbox)
//	url, err := srv.Start("127.0.0.1:0")
//
// The core serves
//
//	POST /token            the OAuth2 token endpoint (refresh_token grant) for the platforms that
//	                       use one; an emulator may route its own token path to HandleToken
//	GET  /sandbox/counts   POST /sandbox/reset   GET|POST /sandbox/faults
//
// and asks the emulators, in mount order, for every other path (Emulator.Route).
//
// Each emulator checks auth the way its platform does, validates the body against the
// schema facts (package schema: unknown fields, types, enums, required fields, limits) and
// the platform's own format rules, and answers with the platform's real success and error
// shapes. It applies the platform's dedup key and counts, per platform and dedup key, how
// many events it received and how many took effect (Server.RecordLocked), so a test can
// assert exactly-once effect while still seeing resends.
//
// Faults (Options.Faults, or POST /sandbox/faults at run time) inject 5xx, 429 with
// Retry-After, slow responses (the request is processed, then the answer is held past the
// client's timeout), answers the uploaders do not list, auth errors inside a 5xx, row
// rejections by a marker name or key, whole-batch rejections and an expired-token window;
// Server.RevokeTokens expires the issued tokens. Random faults draw (Server.Draw) from a
// math/rand source seeded by Options.Seed, so a run is reproducible for a given request
// order. Each platform answers a drawn fault in its own shape.
//
// The core names no platform: Faults.Platforms, Options.Platforms and the counts are keyed
// by the platform name its emulator reports (the destination's `platform` value).
package sandbox
