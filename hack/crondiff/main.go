// crondiff answers, for each schedule it reads, what Kubernetes does with it as a CronJob: whether
// the API server accepts it, and at which instants the cronjob controller fires it. It is the
// oracle of tests/integration/test_cron_differential.py, which compares kubemill's cron with it.
//
// Input, one JSON object per line:  {"schedule": "30 2 * * *", "timeZone": "Europe/Berlin",
// "after": 1806368400, "count": 6}  (after: Unix seconds).
// Output, one JSON object per line, in the same order: {"valid": true, "slots": [...]} with the
// first `count` slots strictly after `after` in Unix seconds (fewer when robfig gives up, after
// 5 years), or {"valid": false, "error": "..."}.
//
// The two steps copy Kubernetes v1.36.3 (the version testenv/k8s builds):
//   - validation, pkg/apis/batch/validation validateScheduleFormat: cron.ParseStandard on the
//     schedule as written (with parsers.ParseCronScheduleWithPanicRecovery's recover), and no
//     "TZ" anywhere in a new object's schedule;
//   - the controller, pkg/controller/cronjob formatSchedule: with spec.timeZone set it parses
//     "TZ=<timeZone> <schedule>" and calls Schedule.Next from the last slot.
//
// Time zones come from the IANA database that $ZONEINFO names (Go's own lookup), so the test
// can point Go at the files Python's zoneinfo reads and both sides agree on every transition.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

type request struct {
	Schedule string `json:"schedule"`
	TimeZone string `json:"timeZone"`
	After    int64  `json:"after"`
	Count    int    `json:"count"`
}

type answer struct {
	Valid bool    `json:"valid"`
	Error string  `json:"error,omitempty"`
	Slots []int64 `json:"slots"`
}

// parse is parsers.ParseCronScheduleWithPanicRecovery: robfig panics on some input (a "TZ="
// prefix without a space), which the API server reports as an invalid schedule.
func parse(schedule string) (sched cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			sched = nil
			err = fmt.Errorf("invalid schedule format: %v", r)
		}
	}()
	return cron.ParseStandard(schedule)
}

func validate(schedule string) error {
	if len(schedule) == 0 {
		return fmt.Errorf("Required value")
	}
	if _, err := parse(schedule); err != nil {
		return err
	}
	if strings.Contains(schedule, "TZ") {
		return fmt.Errorf("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")
	}
	return nil
}

func answerFor(req request) answer {
	if err := validate(req.Schedule); err != nil {
		return answer{Error: err.Error(), Slots: []int64{}}
	}
	if _, err := time.LoadLocation(req.TimeZone); err != nil {
		return answer{Error: err.Error(), Slots: []int64{}}
	}
	sched, err := parse(fmt.Sprintf("TZ=%s %s", req.TimeZone, req.Schedule))
	if err != nil {
		return answer{Error: "controller: " + err.Error(), Slots: []int64{}}
	}
	slots := []int64{}
	t := time.Unix(req.After, 0).UTC()
	for len(slots) < req.Count {
		t = sched.Next(t)
		if t.IsZero() {
			break
		}
		slots = append(slots, t.Unix())
	}
	return answer{Valid: true, Slots: slots}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintf(os.Stderr, "crondiff: bad request %q: %v\n", in.Text(), err)
			os.Exit(2)
		}
		if err := enc.Encode(answerFor(req)); err != nil {
			fmt.Fprintf(os.Stderr, "crondiff: %v\n", err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "crondiff: %v\n", err)
		os.Exit(1)
	}
}
