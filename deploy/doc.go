// Package deploy holds no code: its tests check what deploy/ ships, the
// Kubernetes manifests (deploy/kubernetes), the image (deploy/image) and
// the privileges the manifests grant, against the real binary.
package deploy
