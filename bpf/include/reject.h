/* reject.h: answer a packet for a port or service without endpoints in place (tcp reset, icmp port unreachable). */
#ifndef BPFPROXY_REJECT_H
#define BPFPROXY_REJECT_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include "consts.h"
#include "parse.h"
#include "csum.h"

/* ttl of the replies we build */
#define REJECT_TTL 64
/* length of a tcp reset we send: eth + ip without options + tcp without options */
#define RST_LEN (ETH_HLEN + sizeof(struct iphdr) + sizeof(struct bpx_tcphdr))
/* bytes an icmp error quotes at most: the offending ip header with options + 8 bytes of its payload */
#define ICMP_QUOTE_MAX (60 + 8)
/* bytes inserted in front of the offending packet for the icmp error: ip + icmp header */
#define ICMP_ERR_ROOM (sizeof(struct iphdr) + sizeof(struct bpx_icmphdr))

/* tcp/ip pseudo header for the tcp checksum */
struct pseudo_hdr {
	__be32 saddr;  /* source address, network order */
	__be32 daddr;  /* destination address, network order */
	__u8 zero;     /* zero */
	__u8 proto;    /* ip protocol */
	__be16 len;    /* L4 length, network order */
};

/* fill a 20-byte ip header from src to dst of protocol proto and total length tot_len, with its checksum */
static __always_inline void fill_reply_ip(struct iphdr *ip, __be32 src, __be32 dst, __u8 proto, __u16 tot_len)
{
	__builtin_memset(ip, 0, sizeof(*ip));
	ip->version = 4;
	ip->ihl = 5;
	ip->tot_len = bpx_htons(tot_len);
	ip->ttl = REJECT_TTL;
	ip->protocol = proto;
	ip->saddr = src;
	ip->daddr = dst;
	ip->check = fold_csum(bpf_csum_diff(NULL, 0, (__be32 *)ip, sizeof(*ip), 0));
}

/* the ethernet header of a reply to the packet in skb (macs swapped); negative on failure */
static __always_inline int fill_reply_eth(struct __sk_buff *skb, struct ethhdr *eth)
{
	struct ethhdr orig;

	if (bpf_skb_load_bytes(skb, 0, &orig, sizeof(orig)))
		return -1;
	__builtin_memcpy(eth->h_dest, orig.h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, orig.h_dest, ETH_ALEN);
	eth->h_proto = bpx_htons(ETH_P_IP);
	return 0;
}

/* turn the tcp segment in skb into the reset RFC 793 prescribes, from the frontend back to the client */
static __always_inline __u32 reject_tcp(struct __sk_buff *skb, const struct pkt *p)
{
	struct bpx_tcphdr orig, th = {};
	struct ethhdr eth;
	struct iphdr ip;
	struct pseudo_hdr ph = {};
	__u32 payload, sum;

	if (fill_reply_eth(skb, &eth) || bpf_skb_load_bytes(skb, p->l4_off, &orig, sizeof(orig)))
		return V_DROP_REJECT_FAIL;
	payload = p->tot_len - p->ip_len - orig.doff * 4;
	th.source = p->dport;
	th.dest = p->sport;
	th.doff = 5;
	th.rst = 1;
	if (orig.ack) {
		th.seq = orig.ack_seq;
	} else {
		th.ack = 1;
		th.ack_seq = bpx_htonl(bpx_ntohl(orig.seq) + payload + orig.syn + orig.fin);
	}
	ph.saddr = p->daddr;
	ph.daddr = p->saddr;
	ph.proto = IPPROTO_TCP;
	ph.len = bpx_htons(sizeof(th));
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&ph, sizeof(ph), 0);
	th.check = fold_csum(bpf_csum_diff(NULL, 0, (__be32 *)&th, sizeof(th), sum));
	fill_reply_ip(&ip, p->daddr, p->saddr, IPPROTO_TCP, sizeof(ip) + sizeof(th));

	/* drop ip options (the bytes after the base ip header), then options and payload of tcp */
	if (p->ip_len > sizeof(struct iphdr) &&
	    bpf_skb_adjust_room(skb, -(__s32)(p->ip_len - sizeof(struct iphdr)), BPF_ADJ_ROOM_NET, 0))
		return V_DROP_REJECT_FAIL;
	if (bpf_skb_change_tail(skb, RST_LEN, 0))
		return V_DROP_REJECT_FAIL;
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF + sizeof(ip), &th, sizeof(th), 0))
		return V_DROP_REJECT_FAIL;
	return V_REJECT_TCP_RST;
}

/* turn the packet in skb into an icmp port unreachable from its destination back to its source */
static __always_inline __u32 reject_icmp(struct __sk_buff *skb, const struct pkt *p)
{
	__u8 quote[ICMP_QUOTE_MAX] = {};
	struct bpx_icmphdr ih = {};
	struct ethhdr eth;
	struct iphdr ip;
	__u32 avail = p->tot_len - p->ip_len;
	__u32 quote_len, sum;

	if (avail > 8)
		avail = 8;
	quote_len = p->ip_len + avail;
	if (quote_len > ICMP_QUOTE_MAX || quote_len < sizeof(struct iphdr))
		return V_DROP_REJECT_FAIL;
	if (fill_reply_eth(skb, &eth) || bpf_skb_load_bytes(skb, IP_OFF, quote, quote_len))
		return V_DROP_REJECT_FAIL;
	ih.type = ICMP_DEST_UNREACH;
	ih.code = ICMP_PORT_UNREACH;
	/* the zero bytes after quote_len do not change the sum (and pad an odd length as RFC 1071 says) */
	sum = bpf_csum_diff(NULL, 0, (__be32 *)quote, sizeof(quote), 0);
	ih.checksum = fold_csum(bpf_csum_diff(NULL, 0, (__be32 *)&ih, sizeof(ih), sum));
	fill_reply_ip(&ip, p->daddr, p->saddr, IPPROTO_ICMP, ICMP_ERR_ROOM + quote_len);

	/* room for the new ip + icmp header right after the mac header; the offending packet follows */
	if (bpf_skb_adjust_room(skb, ICMP_ERR_ROOM, BPF_ADJ_ROOM_MAC, 0))
		return V_DROP_REJECT_FAIL;
	if (bpf_skb_change_tail(skb, ETH_HLEN + ICMP_ERR_ROOM + quote_len, 0))
		return V_DROP_REJECT_FAIL;
	if (bpf_skb_store_bytes(skb, 0, &eth, sizeof(eth), 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF, &ip, sizeof(ip), 0) ||
	    bpf_skb_store_bytes(skb, IP_OFF + sizeof(ip), &ih, sizeof(ih), 0))
		return V_DROP_REJECT_FAIL;
	return V_REJECT_ICMP;
}

/* answer p as kube-proxy does for a service without endpoints or a port it does not serve */
static __always_inline __u32 reject_pkt(struct __sk_buff *skb, const struct pkt *p)
{
	/* a later fragment is never answered: it carries no L4 header to answer */
	if (p->frag == PKT_FRAG_LATER)
		return V_DROP_FRAG;
	if (p->proto == IPPROTO_TCP)
		return reject_tcp(skb, p);
	return reject_icmp(skb, p);
}

#endif /* BPFPROXY_REJECT_H */
