"""Synthetic work orders for the embedded demo, in the canonical ticket schema.

The generator draws every random choice as a numpy array and builds the Chinese
text by concatenating arrays of phrases, so the Python code runs once per
template and slot, not once per ticket (except for the few tickets that get a
typo). The data is meant to be learnable but not trivial:

- causes are imbalanced, and each intake text comes from one of several
  templates per cause with slot words, shared symptoms (超时, 无法登录, 报错),
  near-synonyms, common typos, Latin terms, dates, times, ticket numbers and
  IP addresses;
- department, channel and system shift with the cause, escalation with the
  cause and with words such as 紧急, 全部 and 大面积;
- handling hours are log-normal with a cause-dependent median;
- about 15% of the intake texts read like another cause, and about 6% of the
  recorded labels are replaced at random (label noise).

Metadata, escalation, priority, handling group and handling hours follow the
true cause. The recorded ``category`` and ``root_cause`` and the closure notes,
which are filled in together at closure, carry the noisy label.
"""

from __future__ import annotations

import logging
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.schema import CANONICAL_FIELDS
from features.taxonomy import Cause, Taxonomy, load_taxonomy

logger = logging.getLogger(__name__)

DEMO_FIELDS = CANONICAL_FIELDS + ("handling_group", "priority")
OUTPUT_SUFFIXES = (".csv", ".parquet")

YEAR = 2025
TICKET_PREFIX = f"WO-{YEAR}-"
LABEL_NOISE_RATE = 0.06
# Intake text describes symptoms more than causes and is often misleading, so
# part of the text comes from another cause: whole descriptions and titles
# (mostly from a cause of the same category), details and symptoms.
MISLEADING_TEXT_RATE = 0.15
MISLEADING_SAME_CATEGORY_SHARE = 0.7
BORROWED_DETAIL_RATE = 0.1
BORROWED_SYMPTOM_RATE = 0.3
# Share of replaced causes (noisy labels, borrowed details) that move to
# another cause of the same category, the mistake a handler is most likely
# to make. The rest move to any other cause.
SAME_CATEGORY_SHARE = 0.5
TYPO_RATE = 0.05
VAGUE_TEMPLATE_RATE = 0.15

# Metadata values. Each system maps to the aliases that tickets use for it.
SYSTEMS: dict[str, tuple[str, ...]] = {
    "ERP系统": ("ERP系统", "ERP", "erp", "SAP"),
    "CRM系统": ("CRM系统", "CRM", "客户管理系统"),
    "OA办公系统": ("OA", "OA系统", "办公系统", "oa"),
    "财务系统": ("财务系统", "财务软件", "报销系统"),
    "工单系统": ("工单系统", "工单平台", "ITSM"),
    "邮件系统": ("邮箱", "邮件系统", "Outlook", "企业邮箱"),
    "VPN": ("VPN", "vpn", "远程接入"),
    "门户网站": ("官网", "门户网站", "网站", "门户"),
    "数据中台": ("数据中台", "报表平台", "BI报表"),
    "人事系统": ("人事系统", "HR系统", "考勤系统"),
    "计费系统": ("计费系统", "收费系统", "账务系统"),
    "移动App": ("App", "手机App", "移动端", "APP"),
}
DEPARTMENTS = (
    "财务部",
    "人力资源部",
    "市场部",
    "客服中心",
    "信息技术部",
    "运营部",
    "销售部",
    "采购部",
    "行政部",
    "生产部",
)
CHANNELS = ("电话", "邮件", "在线表单", "企业微信", "监控告警", "现场报修")
HANDLING_GROUPS = (
    "数据库组",
    "网络组",
    "应用运维组",
    "服务台",
    "安全组",
    "供应商管理组",
)
PRIORITIES = ("高", "中", "低")

_BASE_SYSTEM_WEIGHTS = dict.fromkeys(SYSTEMS, 1.0)
_BASE_DEPARTMENT_WEIGHTS = {
    "财务部": 1.2,
    "人力资源部": 0.8,
    "市场部": 1.0,
    "客服中心": 1.6,
    "信息技术部": 1.0,
    "运营部": 1.3,
    "销售部": 1.2,
    "采购部": 0.6,
    "行政部": 0.6,
    "生产部": 0.9,
}
_BASE_CHANNEL_WEIGHTS = {
    "电话": 3.0,
    "邮件": 2.0,
    "在线表单": 3.0,
    "企业微信": 2.0,
    "监控告警": 1.0,
    "现场报修": 0.8,
}
# The team that usually owns a system is more likely to handle its tickets.
_SYSTEM_HOME_GROUP = {
    "ERP系统": "应用运维组",
    "CRM系统": "应用运维组",
    "OA办公系统": "服务台",
    "财务系统": "数据库组",
    "工单系统": "服务台",
    "邮件系统": "应用运维组",
    "VPN": "网络组",
    "门户网站": "网络组",
    "数据中台": "数据库组",
    "人事系统": "服务台",
    "计费系统": "数据库组",
    "移动App": "应用运维组",
}
_HOME_GROUP_BOOST = 2.5

# Slot words shared by all causes. Tickets with urgent or wide-scope words
# escalate more often than tickets with narrow-scope words or none.
_URGENT_WORDS = ("紧急！", "【紧急】", "加急：", "非常紧急，", "急！", "紧急求助：")
_WIDE_SCOPE_WORDS = (
    "目前全部用户都受影响。",
    "大面积无法使用。",
    "整个部门都用不了。",
    "所有分支机构均受影响。",
    "全公司都受影响，影响范围很大。",
    "大面积报障，电话已经打爆。",
)
_NARROW_SCOPE_WORDS = (
    "",
    "",
    "",
    "目前只有我这边有问题。",
    "个别用户受影响。",
    "仅一台电脑出现。",
    "暂时不影响其他人。",
)
_URGENT_TITLE_TAGS = ("【紧急】", "紧急：", "【加急】")
_USER_UNITS = ("个用户", "名同事", "个人", "个账号")
# Common input-method typos and variant spellings, applied to a few descriptions.
_TYPOS = (
    ("登录", "登陆"),
    ("账号", "帐号"),
    ("已经", "以经"),
    ("无法", "无发"),
    ("数据", "数居"),
    ("报错", "报措"),
    ("超时", "超市"),
    ("恢复", "回复"),
)

# Templates that fit every cause: vague tickets that only metadata can place.
_VAGUE_TEMPLATES = (
    "{system}{symptom}，请处理。",
    "{urgency}{system}有问题，{symptom}。",
    "{when}{system}{symptom}，麻烦尽快看一下。",
    "如题，{system}{symptom}。{scope}",
    "{dept}反馈{system}{symptom}，具体情况电话沟通。",
)
_CLOSURE_TEMPLATES = (
    "经排查，{finding}。原因归类：{category_name}-{cause_name}。{measure}。",
    "处理结果：{finding}，于{close_when}处理完成。根因为{cause_name}，后续{measure}。",
    "根因：{cause_name}。{finding}。改进措施：{measure}。",
    "{finding}，处理耗时{hours_text}。定性为{cause_name}，已告知报修人，{measure}。",
)
_FALLBACK_TITLES = ("{tag}{system}{symptom}", "{system}问题", "{tag}{system}异常")
_FALLBACK_SYMPTOMS = ("报错", "超时", "无法登录", "打不开", "异常", "很慢")


@dataclass(frozen=True)
class CauseProfile:
    """Phrase banks and label correlations of one root cause.

    Weights are relative and are normalised over the values that appear. A
    value missing from a weight mapping keeps the base weight (systems,
    departments, channels) or gets zero (handling groups).
    """

    # Relative frequency among tickets, normalised over the taxonomy's causes.
    share: float
    titles: tuple[str, ...]
    descriptions: tuple[str, ...]
    symptoms: tuple[str, ...]
    details: tuple[str, ...]
    findings: tuple[str, ...]
    handling_groups: dict[str, float]
    system_boost: dict[str, float] = field(default_factory=dict)
    department_boost: dict[str, float] = field(default_factory=dict)
    channel_boost: dict[str, float] = field(default_factory=dict)
    urgent_rate: float = 0.1
    wide_scope_rate: float = 0.1
    # Log-odds of escalation before the urgent and wide-scope words.
    escalation_logit: float = -2.0
    median_hours: float = 8.0
    # Extra day weight for days 25-31 of a month and for June to September.
    month_end_boost: float = 1.0
    summer_boost: float = 1.0
    # Extra hour weight for 20:00-06:59, when attacks and outages show up.
    night_boost: float = 1.0


# Phrase banks per root-cause code. A cause that the taxonomy lists but this
# table lacks gets a generic profile built from its taxonomy description.
CAUSE_PROFILES: dict[str, CauseProfile] = {
    "crash": CauseProfile(
        share=0.12,
        titles=(
            "{tag}{system}宕机",
            "{tag}{system}{symptom}",
            "{system}服务中断",
            "{system}访问不了",
        ),
        descriptions=(
            "{urgency}{when}，{system}{symptom}，{detail}。{scope}请尽快恢复。",
            "{urgency}{system}从{time}开始{symptom}，{detail}，业务已停止。{scope}",
            "用户反馈{system}{symptom}，刷新多次仍然不行，服务器{ip}ping不通。{scope}",
            "监控告警：{system}({ip}){detail}，告警单号{ref}。{urgency}{scope}",
            "{system}突然{symptom}，重启客户端无效，是不是{detail}？{scope}",
        ),
        symptoms=(
            "打不开",
            "无法访问",
            "服务down了",
            "报502 Bad Gateway",
            "白屏",
            "连接被拒绝",
            "超时",
            "无法登录",
            "报错",
            "进不去",
        ),
        details=(
            "服务器宕机",
            "应用服务挂了",
            "Nginx返回502",
            "进程异常退出",
            "数据库实例down了",
            "机房一台主机自动重启",
            "页面提示Service Unavailable",
            "服务端口不通",
            "集群节点失联",
            "Tomcat起不来",
        ),
        findings=(
            "应用服务器内存溢出导致服务宕机，已重启恢复",
            "数据库主节点故障，已切换至备节点",
            "Nginx进程异常退出，已拉起并加守护",
            "存储控制器故障导致主机宕机，已更换控制器",
            "中间件线程耗尽导致服务不可用，已扩容并重启",
        ),
        handling_groups={
            "应用运维组": 0.45,
            "数据库组": 0.2,
            "网络组": 0.25,
            "服务台": 0.05,
            "供应商管理组": 0.05,
        },
        system_boost={"ERP系统": 2.0, "门户网站": 2.0, "邮件系统": 1.5, "移动App": 1.5},
        department_boost={"信息技术部": 2.0, "客服中心": 1.5},
        channel_boost={"监控告警": 5.0, "电话": 1.5},
        urgent_rate=0.35,
        wide_scope_rate=0.35,
        escalation_logit=-1.4,
        median_hours=3.0,
        night_boost=2.0,
    ),
    "data_error": CauseProfile(
        share=0.09,
        titles=(
            "{system}{symptom}",
            "{tag}{system}数据异常",
            "{system}数据丢失",
            "{system}报表数据不对",
        ),
        descriptions=(
            "{when}发现{system}{symptom}，{detail}，请核查。{scope}",
            "{system}里{detail}，涉及单据约{count}条。{urgency}麻烦尽快恢复数据。",
            "{urgency}{dept}反馈{system}{symptom}：{detail}。参考单号{ref}。",
            "核对{system}数据时{symptom}，{detail}，上周{time}之前都是正常的。",
            "{system}{symptom}，{detail}，是不是昨晚同步出了问题？影响{users}。",
        ),
        symptoms=(
            "数据不对",
            "数据丢失",
            "金额对不上",
            "记录不见了",
            "显示乱码",
            "出现重复记录",
            "报错",
            "查询结果为空",
            "数据对不上",
        ),
        details=(
            "昨天录入的订单全部不见了",
            "导出的报表金额与实际不一致",
            "客户信息字段为空",
            "同步后出现大量重复数据",
            "迁移后历史工单缺失",
            "库存数量变成负数",
            "附件打不开提示文件损坏",
            "Oracle表里的数据被覆盖",
            "ETL任务跑完后数据少了一半",
            "数据库表空间满，新单据写不进去",
            "提示表空间不足，保存失败",
        ),
        findings=(
            "数据迁移脚本遗漏字段导致数据缺失，已从备份恢复",
            "同步任务重复执行导致重复数据，已清理并加幂等校验",
            "数据库表损坏，已修复并重建索引",
            "批处理异常中断导致部分记录丢失，已补录",
            "表空间满导致数据写入失败，已扩容表空间并清理历史数据",
        ),
        handling_groups={"数据库组": 0.6, "应用运维组": 0.3, "服务台": 0.1},
        system_boost={
            "财务系统": 3.0,
            "数据中台": 3.0,
            "ERP系统": 2.0,
            "计费系统": 2.0,
        },
        department_boost={"财务部": 2.5, "运营部": 1.5},
        channel_boost={"邮件": 1.8, "在线表单": 1.4},
        urgent_rate=0.15,
        wide_scope_rate=0.12,
        escalation_logit=-2.0,
        median_hours=10.0,
        month_end_boost=1.6,
    ),
    "performance": CauseProfile(
        share=0.12,
        titles=(
            "{system}很慢",
            "{tag}{system}{symptom}",
            "{system}响应慢",
            "{system}卡顿严重",
        ),
        descriptions=(
            "{when}起{system}{symptom}，{detail}。{scope}",
            "{system}这几天{symptom}，{detail}，影响{users}正常办公。",
            "监控显示{system}服务器{ip}{detail}，用户反馈{symptom}。{urgency}",
            "月底结账时{system}{symptom}，{detail}。{urgency}请优化。",
            "{dept}反映{system}{symptom}，尤其是{time}前后，{detail}。",
        ),
        symptoms=(
            "很慢",
            "卡顿",
            "超时",
            "一直转圈",
            "响应慢",
            "加载半天",
            "报错",
            "提交失败",
            "卡死",
            "特别卡",
        ),
        details=(
            "打开一个页面要一分多钟",
            "查询报表超时",
            "CPU占用100%",
            "接口响应超过30秒",
            "高峰期几乎无法使用",
            "批量导出一直卡住",
            "数据库连接池耗尽",
            "内存使用率告警",
            "IO等待很高",
        ),
        findings=(
            "慢SQL导致数据库负载过高，已优化索引",
            "服务器资源不足，已扩容CPU和内存",
            "缓存失效导致请求直达数据库，已修复缓存策略",
            "报表查询未分页，已优化查询逻辑",
        ),
        handling_groups={
            "应用运维组": 0.45,
            "数据库组": 0.35,
            "网络组": 0.15,
            "服务台": 0.05,
        },
        system_boost={"数据中台": 2.5, "ERP系统": 2.0, "财务系统": 1.5, "CRM系统": 1.5},
        department_boost={"财务部": 1.5, "销售部": 1.5, "客服中心": 1.3},
        channel_boost={"监控告警": 3.0, "企业微信": 1.3},
        urgent_rate=0.12,
        wide_scope_rate=0.2,
        escalation_logit=-2.3,
        median_hours=14.0,
        month_end_boost=2.0,
    ),
    "misoperation": CauseProfile(
        share=0.16,
        titles=(
            "{system}{symptom}",
            "{system}数据被误删",
            "{tag}{system}操作错误需回退",
            "工单指派错误",
        ),
        descriptions=(
            "{when}，{detail}，现在{system}{symptom}，请帮忙恢复。",
            "{system}{symptom}，经了解是{detail}。{urgency}请协助处理。",
            "{dept}同事在{system}操作时{detail}，工单{ref}需要回退。",
            "{system}{symptom}，应该是{detail}，麻烦查一下操作日志。{scope}",
            "{urgency}{detail}，导致{system}{symptom}，影响{users}。",
        ),
        symptoms=(
            "数据不对",
            "无法登录",
            "报错",
            "账号被锁",
            "工单被关闭",
            "权限丢失",
            "派错人",
            "单据作废了",
        ),
        details=(
            "同事误删了客户记录",
            "工单被错误指派到其他组",
            "操作员把状态改成了已关闭",
            "批量导入时选错了模板",
            "误点了作废按钮",
            "配置被改错了",
            "账号被错误禁用",
            "分类选错导致流转到错误部门",
            "把测试数据导入了正式环境",
        ),
        findings=(
            "操作人员误删记录，已从回收站恢复",
            "工单分类选择错误，已重新指派",
            "批量导入使用了错误模板，已回退并重新导入",
            "配置参数被误改，已恢复原配置",
        ),
        handling_groups={"服务台": 0.6, "应用运维组": 0.3, "数据库组": 0.1},
        system_boost={"工单系统": 3.0, "CRM系统": 2.0, "ERP系统": 1.5},
        department_boost={"客服中心": 2.0, "运营部": 1.5, "销售部": 1.3},
        channel_boost={"在线表单": 1.5, "企业微信": 1.5},
        urgent_rate=0.08,
        wide_scope_rate=0.05,
        escalation_logit=-3.0,
        median_hours=3.0,
    ),
    "communication": CauseProfile(
        share=0.12,
        titles=(
            "{system}问题一直没人处理",
            "{tag}催办：{system}{symptom}",
            "再次反馈{system}{symptom}",
            "{system}问题答复不一致",
        ),
        descriptions=(
            "{system}{symptom}的问题{detail}。{urgency}请给个明确答复。",
            "关于工单{ref}：{detail}，现在{system}还是{symptom}。",
            "{when}报修过{system}{symptom}，{detail}。{scope}",
            "{dept}反映：{detail}，不知道{system}的问题到底谁在处理。",
            "第二次反馈：{system}{symptom}，{detail}。",
        ),
        symptoms=(
            "一直没人处理",
            "没有收到通知",
            "进度不清楚",
            "被重复派单",
            "答复不一致",
            "超时",
            "报错",
            "无法登录",
        ),
        details=(
            "之前已经报过一次但没有人回复",
            "客服和技术给的答复不一样",
            "交接时没有说明情况",
            "电话打了几次都没人接",
            "通知没有传达到本部门",
            "工单转了三个组还没解决",
            "客户说的问题和记录的不一致",
            "处理人休假没人跟进",
        ),
        findings=(
            "交接班信息遗漏，已补充交接记录",
            "需求描述与实际问题不一致，已与用户重新确认",
            "通知未同步到相关部门，已补发通知",
            "多个处理组之间信息未共享，已指定唯一负责人",
        ),
        handling_groups={"服务台": 0.75, "应用运维组": 0.15, "供应商管理组": 0.1},
        system_boost={"工单系统": 3.0, "CRM系统": 1.5, "OA办公系统": 1.5},
        department_boost={"客服中心": 3.0, "市场部": 1.5},
        channel_boost={"电话": 2.5, "邮件": 1.5},
        urgent_rate=0.15,
        wide_scope_rate=0.05,
        escalation_logit=-2.2,
        median_hours=20.0,
    ),
    "training": CauseProfile(
        share=0.09,
        titles=(
            "{system}不会操作",
            "咨询{system}使用方法",
            "{system}{symptom}",
            "{system}操作求助",
        ),
        descriptions=(
            "{system}{symptom}，{detail}，请指导一下。",
            "刚入职，{detail}，{system}{symptom}，有没有操作手册？",
            "{when}在{system}提交时{symptom}，{detail}。",
            "{dept}多名同事反映{detail}，{system}{symptom}。",
            "请问{system}{symptom}怎么办？{detail}。",
        ),
        symptoms=(
            "不会操作",
            "找不到入口",
            "无法登录",
            "报错",
            "提交失败",
            "不知道怎么填",
            "一直提示格式错误",
        ),
        details=(
            "新员工不清楚报销流程",
            "不知道在哪里修改密码",
            "系统升级后新功能不会用",
            "按照旧流程操作一直报错",
            "不清楚审批要选哪个节点",
            "导入模板格式填错了",
            "不知道VPN怎么配置",
            "没人培训过新版本",
        ),
        findings=(
            "用户不熟悉新版操作流程，已远程指导完成",
            "新员工未参加系统培训，已安排培训",
            "用户按旧版流程操作，已发送操作手册",
            "模板填写不规范，已讲解填写要求",
        ),
        handling_groups={"服务台": 0.8, "应用运维组": 0.2},
        system_boost={"OA办公系统": 3.0, "人事系统": 2.0, "财务系统": 2.0, "VPN": 1.5},
        department_boost={"人力资源部": 2.0, "行政部": 2.0, "生产部": 1.5},
        channel_boost={"企业微信": 2.0, "在线表单": 1.5, "监控告警": 0.05},
        urgent_rate=0.04,
        wide_scope_rate=0.03,
        escalation_logit=-3.5,
        median_hours=2.0,
    ),
    "supplier": CauseProfile(
        share=0.07,
        titles=(
            "{system}{symptom}，需厂商处理",
            "{tag}{system}授权到期",
            "{system}{symptom}",
            "厂商响应慢：{system}",
        ),
        descriptions=(
            "{system}{symptom}，{detail}。{urgency}请协调厂家。",
            "{when}起{system}{symptom}，{detail}，目前没有解决方案。{scope}",
            "{system}由供应商维护，{detail}，目前{symptom}。",
            "{urgency}{system}{symptom}，厂商工单号{ref}，{detail}。",
            "{dept}使用的{system}{symptom}，{detail}，已影响{users}。",
        ),
        symptoms=(
            "无法使用",
            "报错",
            "超时",
            "授权过期",
            "功能异常",
            "打不开",
            "提示License失效",
        ),
        details=(
            "厂商补丁安装后功能异常",
            "软件授权到期，供应商还没续期",
            "厂商工程师迟迟没有到场",
            "外包商提供的版本有缺陷",
            "硬件返修已经两周未回",
            "供应商热线一直占线",
            "SSL证书由供应商管理已过期",
            "维保合同到期没人响应",
        ),
        findings=(
            "厂商补丁存在缺陷，已由厂商回退补丁",
            "软件授权过期，已督促供应商续期",
            "外包版本缺陷，已由供应商发布修复版本",
            "硬件返修延误，已启用备机并催办厂商",
        ),
        handling_groups={"供应商管理组": 0.65, "应用运维组": 0.2, "网络组": 0.15},
        system_boost={"ERP系统": 2.0, "邮件系统": 2.0, "计费系统": 1.5},
        department_boost={"采购部": 3.0, "信息技术部": 1.5},
        channel_boost={"邮件": 2.0},
        urgent_rate=0.15,
        wide_scope_rate=0.15,
        escalation_logit=-1.8,
        median_hours=40.0,
    ),
    "external_interface": CauseProfile(
        share=0.08,
        titles=(
            "{system}接口{symptom}",
            "{tag}{system}对接异常",
            "{system}同步失败",
            "外部接口报错",
        ),
        descriptions=(
            "{system}调用外部接口{symptom}，{detail}，日志在{ip}上。",
            "{when}开始{detail}，{system}{symptom}。{scope}",
            "{system}与合作方对接{symptom}：{detail}，流水号{ref}。",
            "{urgency}{detail}，导致{system}{symptom}，请联系对方排查。",
            "接口监控告警：{system}{symptom}，{detail}。",
        ),
        symptoms=(
            "对接失败",
            "接口超时",
            "同步失败",
            "返回500 error",
            "推送不到",
            "报错",
            "数据不对",
            "超时",
        ),
        details=(
            "银行接口返回500 error",
            "与税务系统对接超时",
            "第三方支付回调没有收到",
            "短信平台推送失败",
            "调用对方API返回签名错误",
            "对方系统升级后字段格式变了",
            "物流接口一直返回空",
            "CRM和ERP之间的同步任务失败",
        ),
        findings=(
            "对方接口升级后字段变更，已按新格式适配",
            "外部系统证书更新未同步，已更新证书",
            "合作方接口限流导致超时，已协商提高配额",
            "对接报文签名算法不一致，已双方统一",
        ),
        handling_groups={"应用运维组": 0.5, "供应商管理组": 0.3, "网络组": 0.2},
        system_boost={"计费系统": 3.0, "CRM系统": 2.0, "ERP系统": 1.5, "财务系统": 1.5},
        department_boost={"财务部": 1.5, "销售部": 1.5, "运营部": 1.5},
        channel_boost={"监控告警": 2.5, "邮件": 1.3},
        urgent_rate=0.12,
        wide_scope_rate=0.12,
        escalation_logit=-2.0,
        median_hours=24.0,
    ),
    "force_majeure": CauseProfile(
        share=0.03,
        titles=(
            "{tag}{system}中断",
            "停电导致{system}{symptom}",
            "{system}{symptom}",
            "{tag}机房断网",
        ),
        descriptions=(
            "{when}{detail}，{system}{symptom}。{scope}{urgency}",
            "{urgency}因{detail}，{dept}所在楼层{system}{symptom}。",
            "{system}{symptom}，物业通知{detail}，预计恢复时间未知。",
            "{detail}，{system}{symptom}，VPN也连不上。{scope}",
        ),
        symptoms=(
            "断网",
            "无法访问",
            "全部中断",
            "打不开",
            "超时",
            "连不上",
            "服务down了",
        ),
        details=(
            "园区突然停电",
            "台风导致线路中断",
            "施工挖断了光缆",
            "暴雨导致机房进水",
            "市政停电，UPS只撑了半小时",
            "雷击导致交换机损坏",
            "运营商骨干网故障",
            "大雪压断了线路",
        ),
        findings=(
            "市政停电导致机房断电，已由备用电源恢复",
            "施工挖断光缆，运营商已抢修完成",
            "雷击损坏网络设备，已更换设备",
            "台风导致线路中断，已切换备用线路",
        ),
        handling_groups={"网络组": 0.5, "应用运维组": 0.3, "供应商管理组": 0.2},
        system_boost={"VPN": 3.0, "门户网站": 2.0, "邮件系统": 1.5},
        department_boost={"生产部": 2.0, "行政部": 2.0},
        channel_boost={"电话": 2.0, "现场报修": 4.0},
        urgent_rate=0.45,
        wide_scope_rate=0.5,
        escalation_logit=-1.0,
        median_hours=30.0,
        summer_boost=3.0,
    ),
    "malicious_attack": CauseProfile(
        share=0.03,
        titles=(
            "{tag}{system}疑似被攻击",
            "{system}{symptom}",
            "{tag}{system}安全告警",
            "{system}账号异常",
        ),
        descriptions=(
            "{when}，{system}{symptom}，{detail}，来源{ip}。{urgency}",
            "{urgency}{detail}，{system}{symptom}。{scope}",
            "安全设备告警：{detail}，目标{system}，告警号{ref}。",
            "{system}{symptom}，怀疑{detail}，请尽快排查。{scope}",
            "{dept}反馈{system}{symptom}，同时{detail}。",
        ),
        symptoms=(
            "页面被篡改",
            "大量异常登录",
            "无法登录",
            "很慢",
            "报错",
            "弹出勒索提示",
            "账号被锁",
        ),
        details=(
            "疑似遭到DDoS攻击",
            "首页被篡改",
            "收到钓鱼邮件后电脑中毒",
            "防火墙日志有SQL注入痕迹",
            "多个账号被暴力破解",
            "文件被加密并出现勒索信息",
            "出现异常的管理员账号",
            "WAF告警频繁",
        ),
        findings=(
            "遭受DDoS攻击，已启用流量清洗",
            "网站存在注入漏洞被利用，已修补并恢复页面",
            "终端感染勒索病毒，已隔离并从备份恢复",
            "弱口令账号被暴力破解，已重置密码并启用双因素认证",
        ),
        handling_groups={"安全组": 0.8, "网络组": 0.2},
        system_boost={"门户网站": 3.0, "邮件系统": 3.0, "VPN": 2.0},
        department_boost={"信息技术部": 3.0},
        channel_boost={"监控告警": 5.0, "邮件": 1.5},
        urgent_rate=0.45,
        wide_scope_rate=0.3,
        escalation_logit=-0.8,
        median_hours=12.0,
        night_boost=3.0,
    ),
    "unknown": CauseProfile(
        share=0.09,
        titles=(
            "{system}{symptom}",
            "{system}偶发异常",
            "{tag}{system}问题",
            "{system}时好时坏",
        ),
        descriptions=(
            "{when}{system}{symptom}，{detail}。",
            "{system}{symptom}，{detail}，麻烦看看。",
            "{system}有时候{symptom}，{detail}，不知道什么原因。",
            "用户反馈{system}{symptom}，{detail}，工单{ref}。",
            "{urgency}{system}{symptom}，{detail}。{scope}",
        ),
        symptoms=(
            "报错",
            "异常",
            "超时",
            "打不开",
            "偶尔中断",
            "无法登录",
            "数据不对",
            "很慢",
        ),
        details=(
            "原因不明",
            "重启后自己好了",
            "偶发一次，无法复现",
            "日志里没有明显错误",
            "过了一会儿又正常了",
            "只有部分用户遇到",
            "没有任何提示",
            "时好时坏",
        ),
        findings=(
            "故障自行恢复，未能复现",
            "排查日志未发现异常，原因待查",
            "用户未提供故障报告，暂无法定位",
            "现象消失，持续观察中",
        ),
        handling_groups={"应用运维组": 0.4, "服务台": 0.4, "网络组": 0.2},
        urgent_rate=0.08,
        wide_scope_rate=0.06,
        escalation_logit=-2.8,
        median_hours=28.0,
    ),
}


def _fallback_profile(cause: Cause) -> CauseProfile:
    """Build a generic profile for a taxonomy cause that has no phrase bank."""
    detail = cause.description or cause.name
    return CauseProfile(
        share=0.03,
        titles=_FALLBACK_TITLES,
        descriptions=(
            "{when}{system}{symptom}，{detail}。",
            "{urgency}{system}{symptom}，{detail}。{scope}",
            "{dept}反馈{system}{symptom}，{detail}，工单{ref}。",
            "{system}{symptom}，{detail}，请处理。",
        ),
        symptoms=_FALLBACK_SYMPTOMS,
        details=(detail,),
        findings=(detail,),
        handling_groups=dict.fromkeys(HANDLING_GROUPS, 1.0),
    )


# Lookup tables that turn integer arrays into text without a per-row loop.
_DECIMAL = np.array([str(i) for i in range(10_000)], dtype=object)
_PADDED = {
    width: np.array([f"{i:0{width}d}" for i in range(10**width)], dtype=object)
    for width in (1, 2, 3)
}
_DAY_PART = np.array(
    ["凌晨"] * 6
    + ["早上"] * 3
    + ["上午"] * 3
    + ["中午"] * 2
    + ["下午"] * 4
    + ["晚上"] * 6,
    dtype=object,
)
_HOUR_WEIGHTS = np.array(
    [0.2, 0.15, 0.1, 0.1, 0.1, 0.15, 0.3, 0.6, 2.0, 5.0, 6.0, 5.5]
    + [2.5, 3.0, 5.5, 6.0, 5.5, 4.0, 2.0, 1.2, 1.0, 0.8, 0.5, 0.3]
)
_NIGHT_HOURS = np.r_[0:7, 20:24]
# Public holidays of YEAR with few tickets: Spring Festival and National Day,
# as half-open date ranges.
_HOLIDAYS = (("2025-01-28", "2025-02-05"), ("2025-10-01", "2025-10-09"))

# Probabilities of 高, 中, 低: escalated tickets first, then by category code.
_ESCALATED_PRIORITY = (0.65, 0.30, 0.05)
_CATEGORY_PRIORITY = {
    "system": (0.20, 0.55, 0.25),
    "human": (0.06, 0.44, 0.50),
    "third_party": (0.15, 0.55, 0.30),
    "other": (0.12, 0.45, 0.43),
}
_DEFAULT_PRIORITY = (0.10, 0.50, 0.40)
_URGENT_LOGIT = 2.0
_WIDE_SCOPE_LOGIT = 1.5
_ESCALATED_HOURS_FACTOR = 1.5
_HOURS_SIGMA = 0.9
_MIN_HOURS = 0.1
_MAX_HOURS = 2000.0
# The problem starts up to this many minutes before the ticket is registered.
_MAX_REPORT_DELAY_MINUTES = 180
_TEMPLATE_SLOTS = frozenset(
    {
        "system", "symptom", "detail", "when", "time", "ref", "ip", "users",
        "count", "dept", "urgency", "scope", "tag", "finding", "cause_name",
        "category_name", "measure", "close_when", "hours_text",
    }
)  # fmt: skip

Template = tuple[tuple[str, str | None], ...]
# A slot's text for every row, or a function that formats the requested rows.
Slot = np.ndarray | Callable[[np.ndarray], np.ndarray]


def _parse_template(template: str) -> Template:
    """Split a template into (literal text, slot name) pairs and check the slots."""
    parts = []
    for literal, slot, _, _ in string.Formatter().parse(template):
        if slot is not None and slot not in _TEMPLATE_SLOTS:
            raise ValueError(f"template {template!r} uses unknown slot {{{slot}}}")
        parts.append((literal, slot))
    return tuple(parts)


class _Bank:
    """Values of several owners (causes, systems) in one array, drawn per row."""

    def __init__(self, values_per_owner: list[tuple], dtype: type = object):
        counts = [len(values) for values in values_per_owner]
        if min(counts) == 0:
            raise ValueError("every owner of a phrase bank needs at least one value")
        flat = [value for values in values_per_owner for value in values]
        self.values = np.array(flat, dtype=dtype)
        self.counts = np.array(counts)
        self.offsets = np.r_[0, np.cumsum(self.counts)[:-1]]

    def draw(self, rng: np.random.Generator, owner: np.ndarray) -> np.ndarray:
        """Draw one value per row, uniformly among the values of the row's owner."""
        position = (rng.random(owner.size) * self.counts[owner]).astype(np.int64)
        return self.values[self.offsets[owner] + position]


def _template_bank(templates_per_cause: list[tuple[str, ...]]) -> _Bank:
    """Number the templates of all causes in order and bank the numbers by cause."""
    ids, start = [], 0
    for templates in templates_per_cause:
        ids.append(tuple(range(start, start + len(templates))))
        start += len(templates)
    return _Bank(ids, dtype=np.int64)


@dataclass(frozen=True)
class _Plan:
    """The taxonomy's causes joined with their profiles, as arrays indexed by cause."""

    causes: tuple[Cause, ...]
    profiles: tuple[CauseProfile, ...]
    shares: np.ndarray
    category_codes: tuple[str, ...]
    category_index: np.ndarray
    category_start: np.ndarray
    category_size: np.ndarray
    cause_codes: np.ndarray
    category_codes_by_cause: np.ndarray
    cause_names: np.ndarray
    category_names: np.ndarray
    symptoms: _Bank
    details: _Bank
    findings: _Bank
    measures: _Bank
    titles: tuple[Template, ...]
    title_ids: _Bank
    descriptions: tuple[Template, ...]
    description_ids: _Bank
    vague_description_ids: np.ndarray


def _check_profile(code: str, profile: CauseProfile) -> None:
    for name in ("titles", "descriptions", "symptoms", "details", "findings"):
        if not getattr(profile, name):
            raise ValueError(
                f"the profile of cause {code!r} has no {name}: add at least one"
            )
    if profile.share <= 0:
        raise ValueError(
            f"the profile of cause {code!r} has share {profile.share}: "
            "expected a positive number"
        )
    if sum(profile.handling_groups.values()) <= 0:
        raise ValueError(
            f"the profile of cause {code!r} gives no handling group a positive weight"
        )


def _build_plan(taxonomy: Taxonomy) -> _Plan:
    causes = tuple(taxonomy.causes())
    if not causes:
        raise ValueError(
            "the taxonomy lists no root causes, so no tickets can be generated"
        )
    profiles = tuple(CAUSE_PROFILES.get(c.code) or _fallback_profile(c) for c in causes)
    for cause, profile in zip(causes, profiles):
        _check_profile(cause.code, profile)
    category_codes = tuple(taxonomy.category_codes)
    # Causes come grouped by category, so a category's causes are one index range.
    category_index = np.array([category_codes.index(c.category) for c in causes])
    category_size = np.bincount(category_index, minlength=len(category_codes))
    category_start = np.r_[0, np.cumsum(category_size)[:-1]]
    shares = np.array([p.share for p in profiles])

    description_templates = [t for p in profiles for t in p.descriptions]
    vague_description_ids = np.arange(len(_VAGUE_TEMPLATES)) + len(
        description_templates
    )
    description_templates += _VAGUE_TEMPLATES
    measures = [tuple(taxonomy.measures_for(c.code, c.category)) for c in causes]

    return _Plan(
        causes=causes,
        profiles=profiles,
        shares=shares / shares.sum(),
        category_codes=category_codes,
        category_index=category_index,
        category_start=category_start,
        category_size=category_size,
        cause_codes=np.array([c.code for c in causes], dtype=object),
        category_codes_by_cause=np.array([c.category for c in causes], dtype=object),
        cause_names=np.array([c.name for c in causes], dtype=object),
        category_names=np.array(
            [taxonomy.category(c.category).name for c in causes], dtype=object
        ),
        symptoms=_Bank([p.symptoms for p in profiles]),
        details=_Bank([p.details for p in profiles]),
        findings=_Bank([p.findings for p in profiles]),
        measures=_Bank([m or ("持续跟踪同类问题",) for m in measures]),
        titles=tuple(_parse_template(t) for p in profiles for t in p.titles),
        title_ids=_template_bank([p.titles for p in profiles]),
        descriptions=tuple(_parse_template(t) for t in description_templates),
        description_ids=_template_bank([p.descriptions for p in profiles]),
        vague_description_ids=vague_description_ids,
    )


def _weights(
    names: tuple[str, ...], base: dict[str, float], boost: dict[str, float]
) -> np.ndarray:
    weights = np.array([base.get(name, 1.0) * boost.get(name, 1.0) for name in names])
    return weights / weights.sum()


def _row_groups(labels: np.ndarray, count: int) -> list[np.ndarray]:
    """Return, for each label 0..count-1, the row indices that carry it, in row order."""
    # For integers of 16 bits or less, numpy's stable sort is a radix sort (see
    # the numpy.sort documentation), so the sort is linear in the rows.
    small = labels.astype(np.int16) if count <= np.iinfo(np.int16).max else labels
    order = np.argsort(small, kind="stable")
    bounds = np.cumsum(np.bincount(labels, minlength=count))[:-1]
    return np.split(order, bounds)


def _choose_per_group(
    rng: np.random.Generator,
    groups: list[np.ndarray],
    probabilities: np.ndarray,
    size: int,
) -> np.ndarray:
    """Draw one choice per row from the probability row of the row's group."""
    chosen = np.empty(size, dtype=np.int64)
    for group, rows in enumerate(groups):
        chosen[rows] = rng.choice(
            probabilities.shape[1], size=rows.size, p=probabilities[group]
        )
    return chosen


def _choose_per_row(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """Draw one choice per row from a (rows, choices) matrix of probabilities."""
    cumulative = np.cumsum(probabilities, axis=1)
    cumulative /= cumulative[:, -1:]
    chosen = (rng.random((len(probabilities), 1)) >= cumulative).sum(axis=1)
    return np.minimum(chosen, probabilities.shape[1] - 1)


def _zero_padded(values: np.ndarray, width: int) -> np.ndarray:
    """Format non-negative integers as zero-padded decimal text, three digits at a time."""
    text = np.full(values.shape, "", dtype=object)
    remaining = values.astype(np.int64)
    while width > 0:
        chunk = min(3, width)
        text = _PADDED[chunk][remaining % 10**chunk] + text
        remaining //= 10**chunk
        width -= chunk
    return text


def _slot_text(slot: Slot, rows: np.ndarray) -> np.ndarray:
    return slot(rows) if callable(slot) else slot[rows]


def _render(
    templates: tuple[Template, ...], template_ids: np.ndarray, slots: dict[str, Slot]
) -> np.ndarray:
    """Fill each row's template with the row's slot values, one template at a time."""
    text = np.empty(template_ids.size, dtype=object)
    for template, rows in enumerate(_row_groups(template_ids, len(templates))):
        if rows.size == 0:
            continue
        filled = np.full(rows.size, "", dtype=object)
        for literal, slot in templates[template]:
            if literal:
                filled = filled + literal
            if slot is not None:
                filled = filled + _slot_text(slots[slot], rows)
        text[rows] = filled
    return text


def _styled_text(rng: np.random.Generator, styles: tuple, size: int) -> Slot:
    """Draw a style per row and return a slot that formats the requested rows with it.

    A style maps row indices to text. Formatting waits until a template needs
    the slot, because most templates use only a few of the slots.
    """
    style = rng.integers(0, len(styles), size=size)

    def format_rows(rows: np.ndarray) -> np.ndarray:
        text = np.empty(rows.size, dtype=object)
        for index, positions in enumerate(_row_groups(style[rows], len(styles))):
            text[positions] = styles[index](rows[positions])
        return text

    return format_rows


def _moment_text(rng: np.random.Generator, moments: pd.DatetimeIndex) -> Slot:
    """Write dates with times the way people type them: 6月6日15:10, 2025-06-06 15:10, …"""
    year = _DECIMAL[moments.year.to_numpy()]
    month = _DECIMAL[moments.month.to_numpy()]
    month2 = _PADDED[2][moments.month.to_numpy()]
    day = _DECIMAL[moments.day.to_numpy()]
    day2 = _PADDED[2][moments.day.to_numpy()]
    hour = _DECIMAL[moments.hour.to_numpy()]
    hour2 = _PADDED[2][moments.hour.to_numpy()]
    minute = _PADDED[2][moments.minute.to_numpy()]
    minute_plain = _DECIMAL[moments.minute.to_numpy()]
    part = _DAY_PART[moments.hour.to_numpy()]
    styles = (
        lambda r: month[r] + "月" + day[r] + "日" + hour[r] + ":" + minute[r],
        lambda r: (
            year[r] + "-" + month2[r] + "-" + day2[r] + " " + hour2[r] + ":" + minute[r]
        ),
        lambda r: month[r] + "/" + day[r] + " " + hour[r] + ":" + minute[r],
        lambda r: "今天" + hour[r] + ":" + minute[r] + "左右",
        lambda r: month[r] + "月" + day[r] + "日" + part[r],
        lambda r: (
            month[r] + "月" + day[r] + "号" + hour[r] + "点" + minute_plain[r] + "分"
        ),
        # Full-width colon, as typed with a Chinese input method.
        lambda r: month[r] + "月" + day[r] + "日" + hour[r] + "：" + minute[r],
    )
    return _styled_text(rng, styles, len(moments))


def _clock_text(rng: np.random.Generator, moments: pd.DatetimeIndex) -> Slot:
    """Write times of day: 15:10, 15点, 下午3点多."""
    hour_number = moments.hour.to_numpy()
    hour = _DECIMAL[hour_number]
    hour12 = _DECIMAL[(hour_number + 11) % 12 + 1]
    minute = _PADDED[2][moments.minute.to_numpy()]
    part = _DAY_PART[hour_number]
    styles = (
        lambda r: hour[r] + ":" + minute[r],
        lambda r: hour[r] + "点",
        lambda r: part[r] + hour12[r] + "点多",
    )
    return _styled_text(rng, styles, len(moments))


def _reference_text(
    rng: np.random.Generator,
    created: pd.DatetimeIndex,
    ticket_numbers: np.ndarray,
    width: int,
) -> Slot:
    """Write numbers of related incidents and earlier tickets: INC20250312001, WO-2025-…"""
    size = len(created)
    year = _DECIMAL[created.year.to_numpy()]
    month = _PADDED[2][created.month.to_numpy()]
    day = _PADDED[2][created.day.to_numpy()]
    serial = _PADDED[3][rng.integers(1, 1000, size=size)]
    earlier = np.floor(rng.random(size) * ticket_numbers).astype(np.int64) + 1
    short = _DECIMAL[rng.integers(1000, 10_000, size=size)]
    styles = (
        lambda r: "INC" + year[r] + month[r] + day[r] + serial[r],
        lambda r: TICKET_PREFIX + _zero_padded(earlier[r], width),
        lambda r: "SR" + year[r] + month[r] + day[r] + serial[r],
        lambda r: "#" + short[r],
    )
    return _styled_text(rng, styles, size)


def _ip_text(rng: np.random.Generator, size: int) -> Slot:
    """Write private IPv4 addresses, some with a service port."""
    a, b, c = (_DECIMAL[rng.integers(0, 256, size=size)] for _ in range(3))
    host = _DECIMAL[rng.integers(1, 255, size=size)]
    second = _DECIMAL[rng.integers(16, 32, size=size)]
    port = np.array([":8080", ":443", ":1521", ":3306"], dtype=object)[
        rng.integers(0, 4, size=size)
    ]
    styles = (
        lambda r: "10." + a[r] + "." + b[r] + "." + host[r],
        lambda r: "192.168." + c[r] + "." + host[r],
        lambda r: "172." + second[r] + "." + b[r] + "." + host[r],
        lambda r: "10." + a[r] + "." + b[r] + "." + host[r] + port[r],
    )
    return _styled_text(rng, styles, size)


def _whole_numbers(rng: np.random.Generator, median: float, size: int) -> np.ndarray:
    values = np.rint(median * np.exp(rng.standard_normal(size)))
    return np.clip(values, 2, _DECIMAL.size - 1).astype(np.int64)


def _pick(rng: np.random.Generator, words: tuple[str, ...], size: int) -> np.ndarray:
    return np.array(words, dtype=object)[rng.integers(0, len(words), size=size)]


def _calendar_weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the base weight, month and day of month of every day of YEAR."""
    days = np.arange(f"{YEAR}-01-01", f"{YEAR + 1}-01-01", dtype="datetime64[D]")
    # 1970-01-01 was a Thursday, so this numbers Monday as 0.
    weekday = (days.astype(np.int64) + 3) % 7
    weights = np.select([weekday == 5, weekday == 6], [0.35, 0.3], default=1.0)
    for first, end in _HOLIDAYS:
        weights[(days >= np.datetime64(first)) & (days < np.datetime64(end))] = 0.3
    index = pd.DatetimeIndex(days)
    day_of_month = index.day.to_numpy()
    # Month-end closing brings more tickets in the last week of a month.
    weights = weights * np.where(day_of_month >= 25, 1.2, 1.0)
    return weights, index.month.to_numpy(), day_of_month


def _draw_created_seconds(
    rng: np.random.Generator, plan: _Plan, groups: list[np.ndarray], size: int
) -> np.ndarray:
    """Draw creation times in seconds after YEAR-01-01, weighted to business hours."""
    base_days, month, day_of_month = _calendar_weights()
    night = np.zeros(24, dtype=bool)
    night[_NIGHT_HOURS] = True
    seconds = np.empty(size, dtype=np.int64)
    for profile, rows in zip(plan.profiles, groups):
        days = base_days * np.where(day_of_month >= 25, profile.month_end_boost, 1.0)
        days = days * np.where((month >= 6) & (month <= 9), profile.summer_boost, 1.0)
        hours = _HOUR_WEIGHTS * np.where(night, profile.night_boost, 1.0)
        day = rng.choice(days.size, size=rows.size, p=days / days.sum())
        hour = rng.choice(24, size=rows.size, p=hours / hours.sum())
        seconds[rows] = (
            day * 86_400 + hour * 3_600 + rng.integers(0, 3_600, size=rows.size)
        )
    return seconds


def _draw_metadata(
    rng: np.random.Generator, plan: _Plan, groups: list[np.ndarray], size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw system, department and channel indices from the row cause's weights."""
    systems = tuple(SYSTEMS)
    system_p = np.array(
        [_weights(systems, _BASE_SYSTEM_WEIGHTS, p.system_boost) for p in plan.profiles]
    )
    department_p = np.array(
        [
            _weights(DEPARTMENTS, _BASE_DEPARTMENT_WEIGHTS, p.department_boost)
            for p in plan.profiles
        ]
    )
    channel_p = np.array(
        [
            _weights(CHANNELS, _BASE_CHANNEL_WEIGHTS, p.channel_boost)
            for p in plan.profiles
        ]
    )
    system = _choose_per_group(rng, groups, system_p, size)
    department = _choose_per_group(rng, groups, department_p, size)
    channel = _choose_per_group(rng, groups, channel_p, size)
    return system, department, channel


def _draw_escalation(
    rng: np.random.Generator, plan: _Plan, cause: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw the urgent and wide-scope wording flags, then escalation from both and the cause."""
    urgent_rate = np.array([p.urgent_rate for p in plan.profiles])
    wide_rate = np.array([p.wide_scope_rate for p in plan.profiles])
    base_logit = np.array([p.escalation_logit for p in plan.profiles])
    urgent = rng.random(cause.size) < urgent_rate[cause]
    wide_scope = rng.random(cause.size) < wide_rate[cause]
    logit = base_logit[cause] + _URGENT_LOGIT * urgent + _WIDE_SCOPE_LOGIT * wide_scope
    escalated = rng.random(cause.size) < 1.0 / (1.0 + np.exp(-logit))
    return urgent, wide_scope, escalated


def _draw_handling_groups(
    rng: np.random.Generator, plan: _Plan, cause: np.ndarray, system: np.ndarray
) -> np.ndarray:
    """Draw the handling team from the cause's team weights, favouring the system's owner."""
    cause_weights = np.array(
        [
            [p.handling_groups.get(g, 0.0) for g in HANDLING_GROUPS]
            for p in plan.profiles
        ]
    )
    system_boost = np.ones((len(SYSTEMS), len(HANDLING_GROUPS)))
    for index, name in enumerate(SYSTEMS):
        system_boost[index, HANDLING_GROUPS.index(_SYSTEM_HOME_GROUP[name])] = (
            _HOME_GROUP_BOOST
        )
    return _choose_per_row(rng, cause_weights[cause] * system_boost[system])


def _draw_priorities(
    rng: np.random.Generator, plan: _Plan, cause: np.ndarray, escalated: np.ndarray
) -> np.ndarray:
    category_p = np.array(
        [
            _CATEGORY_PRIORITY.get(plan.category_codes[c], _DEFAULT_PRIORITY)
            for c in plan.category_index
        ]
    )
    probabilities = np.where(
        escalated[:, None], np.array(_ESCALATED_PRIORITY), category_p[cause]
    )
    return _choose_per_row(rng, probabilities)


def _draw_handling_seconds(
    rng: np.random.Generator, plan: _Plan, cause: np.ndarray, escalated: np.ndarray
) -> np.ndarray:
    """Draw log-normal handling times around the cause's median, longer when escalated."""
    median = np.array([p.median_hours for p in plan.profiles])[cause]
    median = median * np.where(escalated, _ESCALATED_HOURS_FACTOR, 1.0)
    hours = median * np.exp(_HOURS_SIGMA * rng.standard_normal(cause.size))
    hours = np.clip(hours, _MIN_HOURS, _MAX_HOURS)
    return np.rint(hours * 3_600).astype(np.int64)


def _replace_causes(
    rng: np.random.Generator,
    plan: _Plan,
    cause: np.ndarray,
    rate: float,
    same_category_share: float,
) -> np.ndarray:
    """Replace ``rate`` of the causes by another cause, part of them within the category."""
    if len(plan.causes) == 1:
        return cause.copy()
    replaced = rng.random(cause.size) < rate
    category = plan.category_index[cause]
    size_in_category = plan.category_size[category]
    same_category = (rng.random(cause.size) < same_category_share) & (
        size_in_category > 1
    )

    # Drawing from n - 1 values and skipping the current one gives a uniform
    # choice among the other causes.
    start = plan.category_start[category]
    other_local = rng.integers(0, np.maximum(size_in_category - 1, 1))
    within = start + other_local + (other_local >= cause - start)
    anywhere = rng.integers(0, len(plan.causes) - 1, size=cause.size)
    anywhere = anywhere + (anywhere >= cause)
    return np.where(replaced, np.where(same_category, within, anywhere), cause)


def _add_typos(rng: np.random.Generator, text: np.ndarray) -> np.ndarray:
    """Apply one common typo to TYPO_RATE of the texts (a no-op when the word is absent)."""
    typo = np.where(
        rng.random(text.size) < TYPO_RATE, rng.integers(0, len(_TYPOS), text.size), -1
    )
    for index, (word, misspelling) in enumerate(_TYPOS):
        rows = np.flatnonzero(typo == index)
        text[rows] = [t.replace(word, misspelling) for t in text[rows]]
    return text


def _draw_description_ids(
    rng: np.random.Generator, plan: _Plan, cause: np.ndarray
) -> np.ndarray:
    template = plan.description_ids.draw(rng, cause)
    vague = rng.random(cause.size) < VAGUE_TEMPLATE_RATE
    vague_choice = plan.vague_description_ids[
        rng.integers(0, plan.vague_description_ids.size, cause.size)
    ]
    return np.where(vague, vague_choice, template)


def _intake_slots(
    rng: np.random.Generator,
    plan: _Plan,
    cause: np.ndarray,
    created_at: np.ndarray,
    ticket_width: int,
    system: np.ndarray,
    department: np.ndarray,
    urgent: np.ndarray,
    wide_scope: np.ndarray,
) -> dict[str, Slot]:
    """Draw the slot words of titles and descriptions from the cause the text describes."""
    size = cause.size
    symptom_cause = _replace_causes(rng, plan, cause, BORROWED_SYMPTOM_RATE, 0.0)
    detail_cause = _replace_causes(
        rng, plan, cause, BORROWED_DETAIL_RATE, SAME_CATEGORY_SHARE
    )

    delay = rng.integers(0, _MAX_REPORT_DELAY_MINUTES + 1, size=size)
    problem_start = pd.DatetimeIndex(created_at - delay.astype("timedelta64[m]"))
    user_count = _DECIMAL[_whole_numbers(rng, 12, size)]
    user_unit = _pick(rng, _USER_UNITS, size)

    no_words = np.full(size, "", dtype=object)
    title_tag = np.where(
        urgent & (rng.random(size) < 0.6),
        _pick(rng, _URGENT_TITLE_TAGS, size),
        no_words,
    )
    scope = np.where(
        wide_scope,
        _pick(rng, _WIDE_SCOPE_WORDS, size),
        _pick(rng, _NARROW_SCOPE_WORDS, size),
    )

    return {
        "system": _Bank(list(SYSTEMS.values())).draw(rng, system),
        "symptom": plan.symptoms.draw(rng, symptom_cause),
        "detail": plan.details.draw(rng, detail_cause),
        "when": _moment_text(rng, problem_start),
        "time": _clock_text(rng, problem_start),
        "ref": _reference_text(
            rng, pd.DatetimeIndex(created_at), np.arange(1, size + 1), ticket_width
        ),
        "ip": _ip_text(rng, size),
        "users": lambda rows: user_count[rows] + user_unit[rows],
        "count": _DECIMAL[_whole_numbers(rng, 80, size)],
        "dept": np.array(DEPARTMENTS, dtype=object)[department],
        "urgency": np.where(urgent, _pick(rng, _URGENT_WORDS, size), no_words),
        "scope": scope,
        "tag": title_tag,
    }


def _closure_slots(
    rng: np.random.Generator,
    plan: _Plan,
    recorded_cause: np.ndarray,
    closed_at: np.ndarray,
    handling_seconds: np.ndarray,
) -> dict[str, Slot]:
    """Draw the slot words of closure notes from the recorded cause."""
    closed = pd.DatetimeIndex(closed_at)
    month = _DECIMAL[closed.month.to_numpy()]
    day = _DECIMAL[closed.day.to_numpy()]
    hour = _DECIMAL[closed.hour.to_numpy()]
    minute = _PADDED[2][closed.minute.to_numpy()]
    hours = np.rint(handling_seconds / 3_600).astype(np.int64)
    minutes = np.rint(handling_seconds / 60).astype(np.int64)
    # Under an hour the notes give minutes, else whole hours.
    duration = np.where(hours >= 1, hours, minutes).clip(max=_DECIMAL.size - 1)
    unit = np.where(hours >= 1, "小时", "分钟").astype(object)
    return {
        "finding": plan.findings.draw(rng, recorded_cause),
        "cause_name": plan.cause_names[recorded_cause],
        "category_name": plan.category_names[recorded_cause],
        "measure": plan.measures.draw(rng, recorded_cause),
        "close_when": lambda r: (
            month[r] + "月" + day[r] + "日" + hour[r] + ":" + minute[r]
        ),
        "hours_text": lambda r: "约" + _DECIMAL[duration[r]] + unit[r],
    }


_CLOSURE_NOTES = tuple(_parse_template(t) for t in _CLOSURE_TEMPLATES)
_YEAR_START = np.datetime64(f"{YEAR}-01-01T00:00:00", "s")


def generate_tickets(
    rows: int, seed: int = 0, *, taxonomy: Taxonomy | None = None
) -> pd.DataFrame:
    """Generate ``rows`` synthetic tickets in the canonical schema, ordered by creation time.

    Parameters
    ----------
    rows
        Number of tickets, zero or more.
    seed
        Seed of the random generator. The same ``rows`` and ``seed`` always give
        the same tickets.
    taxonomy
        Taxonomy whose category and root-cause codes label the tickets; the
        shipped one by default. A cause without a phrase bank in
        ``CAUSE_PROFILES`` gets generic text built from its description.

    Returns
    -------
    pandas.DataFrame
        The columns of ``DEMO_FIELDS``: the canonical fields followed by
        ``handling_group`` and ``priority``.
    """
    if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)) or rows < 0:
        raise ValueError(f"rows must be a whole number of zero or more, got {rows!r}")
    rows = int(rows)
    plan = _build_plan(taxonomy or load_taxonomy())
    rng = np.random.default_rng(seed)

    # Ticket numbers follow creation time, so the rows are sorted by it before
    # anything else is drawn.
    true_cause = rng.choice(len(plan.causes), size=rows, p=plan.shares)
    created_seconds = _draw_created_seconds(
        rng, plan, _row_groups(true_cause, len(plan.causes)), rows
    )
    order = np.argsort(created_seconds, kind="stable")
    true_cause = true_cause[order]
    created_seconds = created_seconds[order]
    groups = _row_groups(true_cause, len(plan.causes))

    # Metadata and outcomes follow the true cause, the recorded label does not.
    system, department, channel = _draw_metadata(rng, plan, groups, rows)
    urgent, wide_scope, escalated = _draw_escalation(rng, plan, true_cause)
    handling_group = _draw_handling_groups(rng, plan, true_cause, system)
    priority = _draw_priorities(rng, plan, true_cause, escalated)
    handling_seconds = _draw_handling_seconds(rng, plan, true_cause, escalated)
    recorded_cause = _replace_causes(
        rng, plan, true_cause, LABEL_NOISE_RATE, SAME_CATEGORY_SHARE
    )

    created_at = _YEAR_START + created_seconds.astype("timedelta64[s]")
    closed_at = created_at + handling_seconds.astype("timedelta64[s]")
    ticket_width = max(7, len(str(rows)))
    text_cause = _replace_causes(
        rng, plan, true_cause, MISLEADING_TEXT_RATE, MISLEADING_SAME_CATEGORY_SHARE
    )
    intake = _intake_slots(
        rng,
        plan,
        text_cause,
        created_at,
        ticket_width,
        system,
        department,
        urgent,
        wide_scope,
    )
    title = _render(plan.titles, plan.title_ids.draw(rng, text_cause), intake)
    description_ids = _draw_description_ids(rng, plan, text_cause)
    description = _add_typos(rng, _render(plan.descriptions, description_ids, intake))
    # Dropping the slot arrays before the closure slots keeps peak memory lower.
    del intake
    closure = _closure_slots(rng, plan, recorded_cause, closed_at, handling_seconds)
    closure_ids = rng.integers(0, len(_CLOSURE_NOTES), size=rows)
    closure_notes = _render(_CLOSURE_NOTES, closure_ids, closure)
    del closure

    columns = {
        "ticket_id": TICKET_PREFIX + _zero_padded(np.arange(1, rows + 1), ticket_width),
        "created_at": created_at.astype("datetime64[ns]"),
        "title": title,
        "description": description,
        "department": np.array(DEPARTMENTS, dtype=object)[department],
        "channel": np.array(CHANNELS, dtype=object)[channel],
        "system": np.array(tuple(SYSTEMS), dtype=object)[system],
        "category": plan.category_codes_by_cause[recorded_cause],
        "root_cause": plan.cause_codes[recorded_cause],
        "escalated": escalated,
        "closed_at": closed_at.astype("datetime64[ns]"),
        "handling_hours": handling_seconds / 3_600,
        "closure_notes": closure_notes,
        "handling_group": np.array(HANDLING_GROUPS, dtype=object)[handling_group],
        "priority": np.array(PRIORITIES, dtype=object)[priority],
    }
    return _to_frame(columns)


def _to_frame(columns: dict[str, np.ndarray]) -> pd.DataFrame:
    text_columns = [name for name in DEMO_FIELDS if columns[name].dtype == object]
    frame = pd.DataFrame(columns, columns=list(DEMO_FIELDS))
    # Text columns are always strings, also when there are no rows to infer
    # the type from. "str" is the string dtype of pandas 3 and object before.
    return frame.astype(dict.fromkeys(text_columns, "str"))


def write_demo_data(rows: int, out: str | Path, seed: int = 0) -> Path:
    """Generate ``rows`` tickets with ``generate_tickets`` and write them to ``out``.

    The suffix of ``out`` sets the format: ``.csv`` (UTF-8 with a header row) or
    ``.parquet``. The parent folder is created if it is missing. The same
    ``rows`` and ``seed`` give a byte-identical file with the same library
    versions.

    Raises
    ------
    ValueError
        If the suffix is neither ``.csv`` nor ``.parquet``.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise ValueError(
            f"unsupported output suffix {out.suffix!r} in {out}: "
            f"expected one of {', '.join(OUTPUT_SUFFIXES)}, for example demo.parquet"
        )
    started = time.perf_counter()
    frame = generate_tickets(rows, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        frame.to_csv(out, index=False, encoding="utf-8", lineterminator="\n")
    else:
        frame.to_parquet(out, index=False, engine="pyarrow")
    logger.info(
        "wrote %d demo tickets (seed %d) to %s in %.1f s",
        rows,
        seed,
        out,
        time.perf_counter() - started,
    )
    return out


__all__ = [
    "CAUSE_PROFILES",
    "CHANNELS",
    "DEMO_FIELDS",
    "DEPARTMENTS",
    "HANDLING_GROUPS",
    "OUTPUT_SUFFIXES",
    "PRIORITIES",
    "SYSTEMS",
    "CauseProfile",
    "generate_tickets",
    "write_demo_data",
]
