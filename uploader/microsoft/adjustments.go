package microsoft

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/closedloop/closedloop/internal/pii"
	"github.com/closedloop/closedloop/store"
	"github.com/closedloop/closedloop/uploader"
)

// Adjustments (platforms.md §4.1, §4.2): retractions and restatements go to
// `OfflineConversionAdjustments/Apply` as OfflineConversionAdjustment, which names the
// original conversion as Microsoft knows it (ConversionName, its ConversionTime and
// MicrosoftClickId or hashes, all taken from store.Conversion.Adjusted, the accepted
// original) with AdjustmentType Restate (AdjustmentValue = the new total,
// AdjustmentCurrencyCode) or Retract (no value), AdjustmentTime = the CRM change time.

var _ uploader.Grouper = (*Platform)(nil)

const adjustmentGroup = "adjustment"

// BatchGroup keeps conversions and adjustments apart: they go to different endpoints.
func (p *Platform) BatchGroup(c *store.Conversion) string {
	if store.Adjustment(c.Kind) {
		return adjustmentGroup
	}
	return store.KindConversion
}

type (
	applyAdjustmentsRequest struct {
		OfflineConversionAdjustments []offlineConversionAdjustment `json:"OfflineConversionAdjustments"`
	}
	offlineConversionAdjustment struct {
		AdjustmentType         string   `json:"AdjustmentType"`
		AdjustmentTime         string   `json:"AdjustmentTime"`
		AdjustmentValue        *float64 `json:"AdjustmentValue,omitempty"`
		AdjustmentCurrencyCode string   `json:"AdjustmentCurrencyCode,omitempty"`
		ConversionName         string   `json:"ConversionName"`
		ConversionTime         string   `json:"ConversionTime"`
		MicrosoftClickID       string   `json:"MicrosoftClickId,omitempty"`
		HashedEmailAddress     string   `json:"HashedEmailAddress,omitempty"`
		HashedPhoneNumber      string   `json:"HashedPhoneNumber,omitempty"`
	}
)

// checkAdjustment: an adjustment needs the conversion it adjusts, a goal name and a time
// that is not in the future; a restatement a value and currency. The original's window
// and identifiers were checked when it was sent.
func (p *Platform) checkAdjustment(c *store.Conversion, now time.Time) *uploader.Error {
	if e := uploader.CheckRow(c, uploader.RowRules{API: Spec().API, Retracts: true, Restates: true, NameField: "ConversionName", NonNegativeValue: true}); e != nil {
		return e
	}
	if c.RetractsKey == "" {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "missing_retracts_key", Detail: "an adjustment must name the conversion it adjusts"}
	}
	if c.Kind == store.KindRestatement && c.Value == nil {
		return &uploader.Error{Class: uploader.ClassPermanent, Reason: "missing_value", Detail: "a restatement must carry the new value (AdjustmentValue)"}
	}
	if ahead := c.OccurredAt.Sub(now); ahead > FutureSkew {
		return &uploader.Error{Class: uploader.ClassTransient, Reason: "adjustment_time_in_future", RetryAfter: ahead,
			Detail: fmt.Sprintf("AdjustmentTime is %s ahead of now; Microsoft refuses future times, so the row waits", ahead.Round(time.Second))}
	}
	if wait := p.goalWait(c.ConversionName, now); wait > 0 {
		return &uploader.Error{Class: uploader.ClassHeld, Reason: "OfflineConversionGoalTooRecent", RetryAfter: wait,
			Detail: fmt.Sprintf("Microsoft takes conversions for a goal 2 hours after it is created; waiting %s", wait.Round(time.Minute))}
	}
	return nil
}

// adjustmentsBody is the ApplyOfflineConversionAdjustmentsRequest of a batch of
// adjustments, each with its Adjusted original set.
func adjustmentsBody(batch []store.Conversion) ([]byte, error) {
	req := applyAdjustmentsRequest{OfflineConversionAdjustments: make([]offlineConversionAdjustment, 0, len(batch))}
	for i := range batch {
		c := &batch[i]
		if !store.Adjustment(c.Kind) {
			return nil, fmt.Errorf("microsoft: batch mixes conversions and adjustments (row %d)", i)
		}
		o := c.Adjusted
		if o == nil {
			return nil, fmt.Errorf("microsoft: adjustment row %d carries no Adjusted conversion (the dispatcher sets it)", i)
		}
		a := offlineConversionAdjustment{
			AdjustmentType:     "Retract",
			AdjustmentTime:     ConversionTime(c.OccurredAt),
			ConversionName:     o.ConversionName,
			ConversionTime:     ConversionTime(o.OccurredAt),
			MicrosoftClickID:   clickID(o.Identity),
			HashedEmailAddress: o.Identity.Identifiers.Get(pii.KeyEmail),
			HashedPhoneNumber:  o.Identity.Identifiers.Get(pii.KeyPhoneE164),
		}
		if c.Kind == store.KindRestatement {
			if c.Value == nil {
				return nil, fmt.Errorf("microsoft: restatement row %d has no value; Check rejects those", i)
			}
			v := *c.Value
			a.AdjustmentType, a.AdjustmentValue, a.AdjustmentCurrencyCode = "Restate", &v, c.Currency
		}
		req.OfflineConversionAdjustments = append(req.OfflineConversionAdjustments, a)
	}
	return json.Marshal(req)
}
