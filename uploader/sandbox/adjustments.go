package sandbox

import "strings"

// Adjustments: retractions and restatements of conversions a platform's emulation
// accepted, counted apart from the conversions (Counts.Retracted, Restated,
// AdjustmentDuplicates and per key Adjustments), so a test sees each adjustment applied
// once. Each platform's emulation decides what its platform treats as an adjustment and as
// a duplicate of one (uploader/google, uploader/microsoft).

// RecordAdjustmentLocked counts one adjustment of platform p of kind (RETRACTION/Retract
// or RESTATEMENT/Restate) under its dedup key; effective false is a duplicate the
// platform ignored. Call with the lock held.
func (s *Server) RecordAdjustmentLocked(p, kind, key string, effective bool) {
	c := s.counts[p]
	kc := c.Adjustments[key]
	if kc == nil {
		kc = &KeyCount{}
		c.Adjustments[key] = kc
	}
	kc.Received++
	if !effective {
		c.AdjustmentDuplicates++
		return
	}
	kc.Effective++
	if strings.EqualFold(kind, "RETRACTION") || strings.EqualFold(kind, "Retract") {
		c.Retracted++
	} else {
		c.Restated++
	}
}
