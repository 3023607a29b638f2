// mockoidc-server serves github.com/oauth2-proxy/mockoidc, a test OpenID Connect provider, on a
// fixed address, with two users, for the viewer's end-to-end test behind the real oauth2-proxy
// (tests/e2e/test_viewer_oauth2_proxy.py). Built by hack/oidc/build.sh, with oauth2-proxy.
//
// mockoidc logs in whoever is next in its queue (the default user when the queue is empty),
// without asking: a browser sent to its authorization endpoint comes straight back with a code.
// So the test says who logs in next: POST /kubemill/next-user?name=ada (or bert).
//
// Once listening it prints one JSON line: {"issuer": ..., "clientID": ..., "clientSecret": ...}.
package main

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/oauth2-proxy/mockoidc"
)

// The two people of the test: namespace A's and namespace B's, by e-mail as the viewer's
// default (KUBEMILL_VIEWER_PROXY_USER_HEADER=email) names them to Kubernetes.
var users = map[string]*mockoidc.MockUser{
	"ada": {Subject: "ada", Email: "ada@example.com", EmailVerified: true,
		PreferredUsername: "ada", Groups: []string{"team-a"}},
	"bert": {Subject: "bert", Email: "bert@example.com", EmailVerified: true,
		PreferredUsername: "bert", Groups: []string{"team-b"}},
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	clientID := flag.String("client-id", "kubemill-viewer", "the OAuth client's id")
	clientSecret := flag.String("client-secret", "kubemill-viewer-secret", "and its secret")
	flag.Parse()

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		log.Fatal(err)
	}
	m, err := mockoidc.NewServer(key)
	if err != nil {
		log.Fatal(err)
	}
	m.ClientID = *clientID
	m.ClientSecret = *clientSecret
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	if err := m.Start(ln, nil); err != nil {
		log.Fatal(err)
	}
	// The test's control, beside mockoidc's own endpoints: who logs in next.
	mux := m.Server.Handler.(*http.ServeMux)
	mux.HandleFunc("/kubemill/next-user", func(w http.ResponseWriter, r *http.Request) {
		user, ok := users[r.URL.Query().Get("name")]
		if r.Method != http.MethodPost || !ok {
			http.Error(w, "POST /kubemill/next-user?name=ada|bert", http.StatusBadRequest)
			return
		}
		m.QueueUser(user)
		fmt.Fprintf(w, "next: %s\n", user.Email)
	})
	line, _ := json.Marshal(map[string]string{
		"issuer": m.Issuer(), "clientID": m.ClientID, "clientSecret": m.ClientSecret,
	})
	fmt.Println(string(line))

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	_ = m.Shutdown()
}
