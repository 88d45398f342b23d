/* parse.h: bounds-checked parsing of Ethernet/IPv4 and the TCP/UDP/ICMP header into struct pkt. */
#ifndef BPFPROXY_PARSE_H
#define BPFPROXY_PARSE_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
#include "proto.h"

/* host <-> network byte order for constants and fields (little- and big-endian hosts) */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define bpx_htons(x) ((__be16)__builtin_bswap16(x))
#define bpx_htonl(x) ((__be32)__builtin_bswap32(x))
#else
#define bpx_htons(x) ((__be16)(x))
#define bpx_htonl(x) ((__be32)(x))
#endif
/* network to host order: the same swap */
#define bpx_ntohs(x) bpx_htons(x)
/* network to host order: the same swap */
#define bpx_ntohl(x) bpx_htonl(x)

/* ip frag_off: more fragments follow */
#define IP_FLAG_MF 0x2000
/* ip frag_off: fragment offset in 8-byte units */
#define IP_OFFSET_MASK 0x1fff

/* offset of the IPv4 header: packets start with Ethernet */
#define IP_OFF ETH_HLEN
/* bytes pulled into the linear area when the headers are not there yet: eth + max ip + tcp */
#define PARSE_PULL_LEN (ETH_HLEN + 60 + 20)

/* tcp flags byte (offset 13 of the tcp header) */
#define TCPF_FIN 0x01
/* tcp flags: syn */
#define TCPF_SYN 0x02
/* tcp flags: rst */
#define TCPF_RST 0x04
/* tcp flags: ack */
#define TCPF_ACK 0x10

/* pkt.frag: not a fragment */
#define PKT_FRAG_NONE 0
/* pkt.frag: first fragment (MF set, offset 0): holds the L4 header */
#define PKT_FRAG_FIRST 1
/* pkt.frag: later fragment (offset > 0): no L4 header, ports come from the frag map */
#define PKT_FRAG_LATER 2

/* parse result: IPv4 parsed, headers in bounds */
#define PARSE_OK 0
/* parse result: not IPv4 or too short to name a destination: pass untouched */
#define PARSE_NOT_IPV4 1
/* parse result: IPv4 with a bad or truncated header; saddr/daddr/proto are valid */
#define PARSE_BAD 2

/* the parsed view of one IPv4 packet that every stage reads */
struct pkt {
	__be32 saddr;     /* source address, network order */
	__be32 daddr;     /* destination address, network order */
	__be16 sport;     /* source port (from the frag map for later fragments), network order */
	__be16 dport;     /* destination port, network order */
	__be16 ip_id;     /* ip identification, network order */
	__u16 ip_len;     /* ip header length in bytes (ihl * 4) */
	__u16 l4_off;     /* offset of the L4 header from the start of the packet */
	__u16 tot_len;    /* ip total length, host order */
	__u8 proto;       /* ip protocol */
	__u8 frag;        /* PKT_FRAG_* */
	__u8 tcp_flags;   /* tcp flags byte (tcp only) */
	__u8 icmp_type;   /* icmp type (icmp only) */
};

/* parse Ethernet, IPv4 and the L4 header of skb into p; returns PARSE_* */
static __always_inline int parse_pkt(struct __sk_buff *skb, struct pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip;
	void *l4;
	__u32 ip_len;
	__u16 frag_off;

	if (data + ETH_HLEN > data_end || eth->h_proto != bpx_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	/* non-linear skb whose headers are not all in the linear area: pull them (rare) */
	if (data + PARSE_PULL_LEN > data_end && skb->len > (__u32)(data_end - data)) {
		bpf_skb_pull_data(skb, skb->len < PARSE_PULL_LEN ? skb->len : PARSE_PULL_LEN);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	ip = data + IP_OFF;
	if ((void *)(ip + 1) > data_end)
		return PARSE_NOT_IPV4;
	p->saddr = ip->saddr;
	p->daddr = ip->daddr;
	p->proto = ip->protocol;
	p->ip_id = ip->id;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_BAD;
	ip_len = ip->ihl * 4;
	p->ip_len = ip_len;
	p->l4_off = IP_OFF + ip_len;
	p->tot_len = bpx_ntohs(ip->tot_len);
	if (p->tot_len < ip_len || p->tot_len + ETH_HLEN > skb->len)
		return PARSE_BAD;
	if (data + IP_OFF + ip_len > data_end)
		return PARSE_BAD;
	frag_off = bpx_ntohs(ip->frag_off);
	if (frag_off & IP_OFFSET_MASK) {
		p->frag = PKT_FRAG_LATER;
		return PARSE_OK;
	}
	if (frag_off & IP_FLAG_MF)
		p->frag = PKT_FRAG_FIRST;
	l4 = data + IP_OFF + ip_len;
	if (p->proto == IPPROTO_TCP) {
		struct bpx_tcphdr *th = l4;

		if ((void *)(th + 1) > data_end || th->doff < 5 || th->doff * 4 > p->tot_len - ip_len)
			return PARSE_BAD;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = ((__u8 *)th)[13];
	} else if (p->proto == IPPROTO_UDP) {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return PARSE_BAD;
		p->sport = uh->source;
		p->dport = uh->dest;
	} else if (p->proto == IPPROTO_ICMP) {
		struct bpx_icmphdr *ih = l4;

		if ((void *)(ih + 1) > data_end)
			return PARSE_BAD;
		p->icmp_type = ih->type;
	}
	return PARSE_OK;
}

#endif /* BPFPROXY_PARSE_H */
