// Package hostile applies seeded random hostile layers with containerd's archive.Apply and with
// the layerdiff CLI onto twin trees, and checks that layerdiff does what containerd does (or,
// where containerd refuses a layer, at most applies it inside the root).
package hostile
