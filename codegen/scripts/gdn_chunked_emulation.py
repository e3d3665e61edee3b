#!/usr/bin/env python3
# python3 codegen/scripts/gdn_chunked_emulation.py  (numpy; ~1 min)
# Emulates prefill_gdn_chunked's index math (tiles, layouts, padding) against the recurrent rule.
import numpy as np
rng=np.random.default_rng(1)
T,HK,HV,DK,DV,C,DVS=150,1,2,16,64,64,32
VPK=HV//HK; KEY=HK*DK; VAL=HV*DV; CONV=2*KEY+VAL
TQ=C//4; XC=DVS//2; SL=DV//DVS
qkv=rng.standard_normal((T,CONV)); bp=rng.standard_normal((T,HV)); ap=rng.standard_normal((T,HV))
alog=np.log(rng.uniform(1,5,HV)); dtb=rng.standard_normal(HV)
state0=rng.standard_normal((HV,DK,DV)); 
sig=lambda x:1/(1+np.exp(-x)); sp=lambda x:np.log1p(np.exp(x))
# reference
ref_o=np.zeros((T,VAL)); ref_S=state0.copy()
for h in range(HV):
    kh=h//VPK; S=ref_S[h]
    for t in range(T):
        q=qkv[t,kh*DK:(kh+1)*DK]; k=qkv[t,KEY+kh*DK:KEY+(kh+1)*DK]; v=qkv[t,2*KEY+h*DV:2*KEY+(h+1)*DV]
        q=q/np.sqrt(q@q+1e-6)/np.sqrt(DK); k=k/np.sqrt(k@k+1e-6)
        g=-np.exp(alog[h])*sp(ap[t,h]+dtb[h]); be=sig(bp[t,h])
        S=np.exp(g)*S; u=be*(v-S.T@k); S=S+np.outer(k,u); ref_o[t,h*DV:(h+1)*DV]=S.T@q
    ref_S[h]=S
state=state0.copy(); o=np.full((T,VAL),np.nan)
for blk in range(HV*SL):
    h=blk//SL; col0=(blk%SL)*DVS; kh=h//VPK
    S=state[h][:,col0:col0+DVS]  # view: S[key][col]
    for c0 in range(0,T,C):
        n=min(C,T-c0)
        Ks=np.zeros((C,DK)); qsc=np.zeros(C); bet=np.zeros(C); gam=np.zeros(C)
        for r in range(n):
            row=qkv[c0+r]; kv=row[KEY+kh*DK:KEY+kh*DK+DK]; qv=row[kh*DK:kh*DK+DK]
            Ks[r]=kv/np.sqrt(kv@kv+1e-6); qsc[r]=1/np.sqrt(qv@qv+1e-6)/np.sqrt(DK)
            bet[r]=sig(bp[c0+r,h]); gam[r]=-np.exp(alog[h])*sp(ap[c0+r,h]+dtb[h])
        gam=np.cumsum(gam); tail=np.exp(gam[-1]-gam)
        Mx=np.zeros((C,C)); Vs=np.zeros((C,DVS))
        for it in range(TQ*TQ):
            tr,tc=it//TQ,it%TQ
            for i in range(4):
                for j in range(4):
                    r,c=tr+TQ*i,tc+TQ*j; acc=Ks[r]@Ks[c]
                    Mx[r,c]=bet[r]*acc*np.exp(gam[r]-gam[c]) if c<r else 0
        for it in range(TQ*XC):
            tr,tc=it//XC,it%XC
            for i in range(4):
                for j in range(2):
                    r,col=tr+TQ*i,tc+XC*j; acc=Ks[r]@S[:,col]
                    v=qkv[c0+r,2*KEY+h*DV+col0+col] if r<n else 0
                    Vs[r,col]=bet[r]*(v-np.exp(gam[r])*acc)
        for col in range(DVS):
            for r in range(1,n):
                Vs[r,col]-=Mx[r,:r]@Vs[:r,col]
        for it in range(TQ*TQ):
            tr,tc=it//TQ,it%TQ
            for i in range(4):
                for j in range(4):
                    r,c=tr+TQ*i,tc+TQ*j
                    qr=qkv[c0+(r if r<n else 0),kh*DK:kh*DK+DK]
                    Mx[r,c]=qsc[r]*(qr@Ks[c])*np.exp(gam[r]-gam[c]) if (c<=r and r<n) else 0
        for it in range(TQ*XC):
            tr,tc=it//XC,it%XC
            acc=np.zeros((4,2))
            for i in range(4):
                r=tr+TQ*i; qr=qkv[c0+(r if r<n else 0),kh*DK:kh*DK+DK]
                for j in range(2): acc[i,j]=(qr@S[:,tc+XC*j])*qsc[r]*np.exp(gam[r])
            s_end=min(n,tr+TQ*3+1)
            for i in range(4):
                for j in range(2):
                    acc[i,j]+=Mx[tr+TQ*i,:s_end]@Vs[:s_end,tc+XC*j]
            for i in range(4):
                r=tr+TQ*i
                if r>=n: continue
                for j in range(2): o[c0+r,h*DV+col0+tc+XC*j]=acc[i,j]
        dc=np.exp(gam[-1]); newS=np.empty_like(S)
        for it in range((DK//4)*(DVS//4)):
            kq,cq=it//(DVS//4),it%(DVS//4)
            for i in range(4):
                for j in range(4):
                    key,col=kq+(DK//4)*i,cq+(DVS//4)*j
                    newS[key,col]=dc*S[key,col]+sum(Ks[r,key]*tail[r]*Vs[r,col] for r in range(n))
        S[:]=newS
print("o diff",np.abs(o-ref_o).max(),"S diff",np.abs(state-ref_S).max(),"nan",np.isnan(o).sum())
