# PKI for the testbed: a CA, the apiserver's serving cert, an admin client cert and the
# service-account signing key. RSA throughout (rustls has had trouble with some EC encodings).

make_pki() {
  local dir=$1
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=zeroflow-testbed-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    cat >apiserver.ext <<EXT
subjectAltName = IP:127.0.0.1, IP:10.96.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage = serverAuth
EXT
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout apiserver.key -out apiserver.csr 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    printf 'extendedKeyUsage = clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=testbed-admin" -keyout admin.key -out admin.csr 2>/dev/null
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile client.ext -out admin.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    rm -f ./*.csr ./*.ext
  )
}

write_kubeconfig() {
  local dir=$1 server=$2 out=$3
  cat >"$out" <<EOF2
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: $server
    certificate-authority-data: $(base64 -w0 "$dir/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 "$dir/admin.crt")
    client-key-data: $(base64 -w0 "$dir/admin.key")
contexts:
- name: testbed
  context: {cluster: testbed, user: admin}
current-context: testbed
EOF2
}

# make_serving_cert DIR NAME SANS: NAME.key and NAME.crt in DIR, a serving certificate for the
# subjectAltNames SANS (e.g. "IP:127.0.0.1, DNS:localhost") signed by DIR's CA (make_pki first).
make_serving_cert() {
  local dir=$1 name=$2 sans=$3
  (
    cd "$dir" || exit 1
    printf 'subjectAltName = %s\nextendedKeyUsage = serverAuth\n' "$sans" >"$name.ext"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$name" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
  )
}

# make_client_cert DIR NAME SUBJECT: NAME.key and NAME.crt in DIR, a client certificate (TLS
# client authentication, e.g. to a Kafka listener with `ssl.client.auth=required`) for the
# distinguished name SUBJECT (e.g. "/CN=zeroflow-operator") signed by DIR's CA (make_pki first).
make_client_cert() {
  local dir=$1 name=$2 subject=$3
  (
    cd "$dir" || exit 1
    printf 'extendedKeyUsage = clientAuth\n' >"$name.ext"
    openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$name.key" -out "$name.csr" 2>/dev/null
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
  )
}
