package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// runEtcd starts a single-member etcd through the server's embed package. Only the flags a
// throwaway test store needs are accepted, under etcd's own names, so a command line written for
// the upstream etcd binary works unchanged.
func runEtcd(args []string) int {
	fs := flag.NewFlagSet("etcd", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "default.etcd", "path to the data directory")
	name := fs.String("name", "default", "member name")
	listenClient := fs.String("listen-client-urls", "http://127.0.0.1:2379", "client URLs")
	advertiseClient := fs.String("advertise-client-urls", "", "advertised client URLs")
	listenPeer := fs.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URLs")
	noFsync := fs.Bool("unsafe-no-fsync", false, "skip fsync: fast, and loses data on a crash")
	quotaBytes := fs.Int64("quota-backend-bytes", 0, "backend size quota (0: default)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *advertiseClient == "" {
		*advertiseClient = *listenClient
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dataDir
	cfg.UnsafeNoFsync = *noFsync
	cfg.LogLevel = *logLevel
	if *quotaBytes > 0 {
		cfg.QuotaBackendBytes = *quotaBytes
	}
	var err error
	if cfg.ListenClientUrls, err = parseURLs(*listenClient); err != nil {
		return fail(err)
	}
	if cfg.AdvertiseClientUrls, err = parseURLs(*advertiseClient); err != nil {
		return fail(err)
	}
	if cfg.ListenPeerUrls, err = parseURLs(*listenPeer); err != nil {
		return fail(err)
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fail(err)
	}
	defer e.Close()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		return fail(fmt.Errorf("etcd did not become ready within 60s"))
	case <-signals:
		return 0
	}
	select {
	case err := <-e.Err():
		return fail(err)
	case <-signals:
		return 0
	}
}

func parseURLs(s string) ([]url.URL, error) {
	var out []url.URL
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return nil, err
		}
		out = append(out, *u)
	}
	return out, nil
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "etcd:", err)
	return 1
}
