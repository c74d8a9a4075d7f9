package configreport

import (
	"google.golang.org/protobuf/proto"

	fodcv1 "github.com/fodc-go/fodc/api/proto/banyandb/fodc/v1"
	"github.com/fodc-go/fodc/internal/agent/nodeconfig"
)

// Redact returns a copy of an agent's configuration report in which every
// value whose parameter name looks secret (password, secret, token, key,
// credential, ...) is replaced by "<redacted>" and credentials inside URLs
// and key=value lists are hidden, by the rules our agent applies at the
// source (nodeconfig.IsSecret, RedactValue, RedactArgv). The proxy applies
// it to every report before it is stored or served, so that a report from
// an agent that does not redact (an older or a forged one) never leaks a
// secret. rep itself is not changed.
func Redact(rep *fodcv1.ExtNodeConfigRequest) *fodcv1.ExtNodeConfigRequest {
	if rep == nil {
		return nil
	}
	out := proto.Clone(rep).(*fodcv1.ExtNodeConfigRequest)
	redactParams(out.GetStartupParams())
	redactParams(out.GetAgentParams())
	redactMap(out.GetRuntimeConfig())
	redactMap(out.GetEnvironment())
	if len(out.Args) > 0 {
		out.Args = nodeconfig.RedactArgv(out.Args)
	}
	out.Source = nodeconfig.RedactValue(out.Source)
	for i, e := range out.Errors {
		out.Errors[i] = nodeconfig.RedactValue(e)
	}
	return out
}

func redactParams(m map[string]*fodcv1.ExtParamValues) {
	for k, v := range m {
		if v == nil {
			continue
		}
		for i, s := range v.Values {
			if nodeconfig.IsSecret(k) {
				v.Values[i] = nodeconfig.Redacted
			} else {
				v.Values[i] = nodeconfig.RedactValue(s)
			}
		}
	}
}

func redactMap(m map[string]string) {
	for k, v := range m {
		if nodeconfig.IsSecret(k) {
			m[k] = nodeconfig.Redacted
		} else {
			m[k] = nodeconfig.RedactValue(v)
		}
	}
}
